#!/bin/bash
# SupCon against InfoNCE at equal steps on the CIFAR-10 open-set split (issue 20): the
# shipped recipe (small convnet, 16:0.75,32 px, T 0.2, batch 256) on classes 0-5 for 1,085
# steps (1/8 of the open-set run) with each objective, then the open-set bench of each
# encoder (3 seeds, no peers). About 12 + 2 min per objective on one idle core.
# Writes benchmarks/results/supcon_quick/{c0to5,open}-<objective>-s1085.{json,md};
# encoders go to ${WORK:-$HOME/.cache/gaussood/supcon_quick}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${WORK:-$HOME/.cache/gaussood/supcon_quick}
RES=benchmarks/results/supcon_quick
R="--threads 1 --model small --resolution 16:0.75,32 --temperature 0.2 --classes 0-5 --steps 1085 --knn-every 5"
# Arms (arguments; default: supcon infonce): supcon, infonce, and supcon-rotneg (SupCon
# with one random quarter turn per image, (class, rotation) pairs as the classes).
arms=("$@")
[ ${#arms[@]} -gt 0 ] || arms=(supcon infonce)
for obj in "${arms[@]}"; do
  case $obj in
    supcon|infonce) extra="--objective $obj" ;;
    supcon-rotneg) extra="--objective supcon --rotation negatives" ;;
    *) echo "unknown arm: $obj (supcon, infonce, supcon-rotneg)" >&2; exit 1 ;;
  esac
  # shellcheck disable=SC2086  # word splitting of the option lists is intended
  "$PY" benchmarks/train_encoder.py $R $extra --name c0to5-$obj-s1085 \
    --work-dir "$WORK/runs/c0to5-$obj-s1085" --checkpoint-dir "$WORK" --results-dir $RES
  "$PY" benchmarks/cifar10_ood.py --settings open-set --open-set-encoder "$WORK/c0to5-$obj-s1085.pt" \
    --no-peers --threads 1 --name open-$obj-s1085 --results-dir $RES --no-figure
done
