#!/usr/bin/env bash
# ResNet-18 with the best CPU recipe, on one GPU, in one call of under 8 minutes (issue 20
# item 6): checks CUDA, trains with benchmarks/train_encoder.py on a timed budget, measures
# the full k-NN protocol, and leaves in $OUT only files that a remote run can bring back
# (at most 8, none over 16 MiB, at most two folders down):
#   summary.txt                 device, steps, views/s (whole run and per crop side), k-NN
#   train.log                   the training log
#   checkpoints/<name>.json     provenance (the training record: config, steps, sha256, ...)
#   checkpoints/<name>.pt       the fp16 encoder, or <name>.pt.part-00, -01, ... when over
#                               SPLIT_MIB (ResNet-18: 22 MiB); cat the parts back together
#   results/<name>.json / .md   the k-NN and OOD-proxy curve against training time
#
# A GPU machine whose python3 has torch but no faiss (gaussood's k-NN) and no network, and
# no CIFAR-10 archive: first, here, in the repository root,
#     bash benchmarks/gpu_resnet18.sh prepare      # .gpu/ (git-ignored): archive + faiss
# then send .gpu/ along with the checkout and run, there, with a 480 s limit:
#     OUT=<folder> bash benchmarks/gpu_resnet18.sh
# The same path on the CPU, tiny (2 classes, a 3 s budget, the small convnet, ~30 s):
#     SMOKE=1 OUT=/tmp/gpu-smoke PYTHON=.venv/bin/python bash benchmarks/gpu_resnet18.sh
# Settings (environment): BUDGET_MINUTES (4.5), BATCH (512), RESOLUTION (16:0.75,32),
# KNN_EVERY (10), MODEL (resnet18; small when SMOKE=1), NAME, COMPILE=1 (torch.compile),
# SPLIT_MIB (15), PYTHON (python3: the one with torch), WORK_DIR (a fresh temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [[ ${1:-} == prepare ]]; then
    data=${GAUSSOOD_DATA:-../shared/data}
    mkdir -p .gpu/data
    cp -f "$data/cifar10_jpeg_q75.tar.xz" .gpu/data/
    tmp=$(mktemp -d)
    # faiss for the GPU image's Python 3.12 (abi3 wheel), unpacked and re-packed with xz:
    # 9 MB instead of the wheel's 19 MB, which keeps the call under its 64 MiB.
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$tmp" "faiss-cpu==${FAISS_VERSION:-1.15.1}"
    mkdir "$tmp/site"
    "$PY" -m zipfile -e "$tmp"/faiss_cpu-*.whl "$tmp/site"
    tar -C "$tmp/site" -cf - . | xz -9 -T1 > .gpu/faiss-site.tar.xz
    rm -rf "$tmp"
    total=$(git ls-files -z -co --exclude-standard | xargs -0 stat -c %s 2>/dev/null \
            | awk '{s += $1} END {print s}')
    gpu=$(du -sb .gpu | cut -f1)
    echo "prepared .gpu/ ($((gpu / 1048576)) MiB); the call would send $(((total + gpu) / 1048576)) MiB (limit 64)"
    exit 0
fi

OUT=${OUT:?set OUT to the folder for what comes back}
mkdir -p "$OUT/checkpoints" "$OUT/results"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ -f .gpu/data/cifar10_jpeg_q75.tar.xz ]]; then
    export GAUSSOOD_DATA=$PWD/.gpu/data
elif [[ -z ${GAUSSOOD_DATA:-} && -f ../shared/data/cifar10_jpeg_q75.tar.xz ]]; then
    export GAUSSOOD_DATA=$(cd ../shared/data && pwd)
fi
if ! "$PY" -c "import faiss" 2>/dev/null; then
    [[ -f .gpu/faiss-site.tar.xz ]] || { echo "no faiss: run 'bash $0 prepare' and carry .gpu" >&2; exit 2; }
    site=$(mktemp -d)
    "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" \
        .gpu/faiss-site.tar.xz "$site"  # Python's lzma: no xz binary needed there
    export PYTHONPATH="$PYTHONPATH:$site"
fi

if [[ -n ${SMOKE:-} ]]; then
    MODEL=${MODEL:-small}
    args=(--device cpu --threads 1 --classes 0-1 --budget-minutes "${BUDGET_MINUTES:-0.05}"
          --batch-size 64 --knn-bank 1000 --knn-queries 200 --knn-every 1)
else
    MODEL=${MODEL:-resnet18}
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
    args=(--device cuda --budget-minutes "${BUDGET_MINUTES:-4.5}" --batch-size "${BATCH:-512}"
          --knn-every "${KNN_EVERY:-10}")
fi
if [[ -n ${COMPILE:-} ]]; then args+=(--compile); fi
NAME=${NAME:-cifar10-$MODEL-gpu}
WORK=${WORK_DIR:-$(mktemp -d)}
{ "$PY" -c "import faiss, torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, '|',
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU', '| faiss',
    faiss.__version__, 'from', faiss.__file__)"
  nvidia-smi -L 2>/dev/null || true; } | tee "$OUT/summary.txt"

"$PY" benchmarks/train_encoder.py --model "$MODEL" --resolution "${RESOLUTION:-16:0.75,32}" \
    --temperature 0.2 "${args[@]}" --name "$NAME" --work-dir "$WORK" \
    --checkpoint-dir "$OUT/checkpoints" --results-dir "$OUT/results" 2>&1 | tee "$OUT/train.log"

"$PY" - "$OUT" "$NAME" "$WORK/last.pt" "${SPLIT_MIB:-15}" <<'EOF' | tee -a "$OUT/summary.txt"
import hashlib, json, sys
from pathlib import Path

import torch

out, name, last, split_mib = Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
rec = json.loads((out / "results" / f"{name}.json").read_text())
prov, hist = rec["provenance"], rec["history"]
batch = prov["config"]["batch_size"]
print(f"{name}: {prov['total_steps']} steps, {prov['epochs']} epochs, {prov['views'] / 1e6:.2f} M "
      f"views in {prov['train_seconds'] / 60:.2f} training min "
      f"({prov['views'] / prov['train_seconds']:,.0f} views/s); wall {prov['wall_seconds_last_call'] / 60:.2f} min")
timing = torch.load(last, weights_only=True).get("timing") or {}
for side, sec in (timing.get("seconds_per_step") or {}).items():
    print(f"  timed warm-up, {side} px: {sec * 1e3:.1f} ms/step = {2 * batch / sec:,.0f} views/s")
print(f"weighted k-NN top-1: {100 * prov['knn_top1']:.2f}% full protocol "
      f"({rec['full_protocol']['bank']} / {rec['full_protocol']['queries']}), "
      f"{100 * prov['knn_top1_monitor']:.2f}% monitor")
proxy = next((h["proxy_auroc"] for h in reversed(hist) if h.get("proxy_auroc")), None)
if proxy:
    print("OOD-proxy AUROC (final): " + ", ".join(f"{k} {100 * v:.1f}" for k, v in proxy.items()))
pt = out / "checkpoints" / f"{name}.pt"
data = pt.read_bytes()
assert hashlib.sha256(data).hexdigest() == prov["sha256"], "encoder file does not match its record"
step = int(split_mib * 2**20)
if len(data) > step:  # the device tool brings back files of 16 MiB at most
    parts = [pt.with_name(f"{pt.name}.part-{i:02d}") for i in range(0, -(-len(data) // step))]
    for i, part in enumerate(parts):
        part.write_bytes(data[i * step:(i + 1) * step])
    assert hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest() == prov["sha256"]
    pt.unlink()
    print(f"{pt.name} ({len(data) / 2**20:.1f} MiB) split into {len(parts)} parts; "
          f"cat {pt.name}.part-* > {pt.name}  (sha256 {prov['sha256'][:16]}...)")
EOF
