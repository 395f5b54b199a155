#!/bin/bash
# Fashion-MNIST open set (issue 20): recipe arms against the earlier InfoNCE encoder
# `fashion-mnist-cpu-c0to5.pt` (12 epochs on classes 0-5, 1,680 steps, 16:0.75,32 px,
# T 0.2, batch 256; open-set best 82.5). Each arm changes one thing, trains 12 epochs on
# one thread, then runs the fashion-open-set bench on it (3 seeds, no peers):
#   rotneg  CSI-style rotations as shifted negatives (--rotation negatives)
#   end16   16 px crops throughout (no 32 px phase)
#   reg     the paper's regulariser (norm 0.005, entropy 0.01)
#   crop30, crop50  milder crops: RandomResizedCrop area from 0.3 / 0.5 (default 0.08)
#   base    nothing changed (the shipped recipe; use with a seed suffix)
# A suffix -s<N> trains the arm with seed N (default 0), e.g. rotneg-s1.
# About 12-16 + 3 min per arm on one idle core. Usage: benchmarks/fashion_arms.sh [arm ...]
# Writes benchmarks/results/fashion_arms/{fashion-mnist-cpu-c0to5-<arm>,fashion-open-<arm>}.{json,md};
# encoders go to ${WORK:-$HOME/.cache/gaussood/fashion_arms}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${WORK:-$HOME/.cache/gaussood/fashion_arms}
RES=benchmarks/results/fashion_arms
R="--threads 1 --model small --resolution 16:0.75,32 --temperature 0.2 --knn-every 1 --dataset fashion-mnist --epochs 12 --classes 0-5"
arm_args() {
  local seed="" opts
  if [[ $1 =~ ^(.*)-s([0-9]+)$ ]]; then seed=" --seed ${BASH_REMATCH[2]}"; set -- "${BASH_REMATCH[1]}"; fi
  case $1 in
    base) opts="" ;;
    rotneg) opts="--rotation negatives" ;;
    end16) opts="--resolution 16" ;;
    reg) opts="--norm-weight 0.005 --entropy-weight 0.01" ;;
    crop30) opts="--crop-min-scale 0.3" ;;
    crop50) opts="--crop-min-scale 0.5" ;;
    *) echo "unknown arm: $1 (base, rotneg, end16, reg, crop30, crop50, each with an optional -s<seed>)" >&2; return 1 ;;
  esac
  echo "$opts$seed"
}
arms=("$@")
[ ${#arms[@]} -gt 0 ] || arms=(rotneg end16 reg crop30 crop50)
for arm in "${arms[@]}"; do
  extra=$(arm_args "$arm") || exit 1
  name=fashion-mnist-cpu-c0to5-$arm
  # shellcheck disable=SC2086  # word splitting of the option lists is intended
  "$PY" benchmarks/train_encoder.py $R $extra --name "$name" \
    --work-dir "$WORK/runs/$name" --checkpoint-dir "$WORK" --results-dir $RES
  "$PY" benchmarks/cifar10_ood.py --settings fashion-open-set --fashion-open-set-encoder "$WORK/$name.pt" \
    --no-peers --threads 1 --name fashion-open-$arm --results-dir $RES --no-figure
done
