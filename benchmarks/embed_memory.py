"""Peak memory of embedding a large image folder: it must not grow with the image count.

For each size (default 20,000 and 200,000) the script writes a folder of 64x64 JPEG
images (1,000 per subfolder, smooth random patterns, quality 90), then embeds it in a
fresh process with the shipped gaussood encoder through
``extract_embeddings(encoder, folder, out=...)``: images are read batch by batch and
the rows are appended to a ``.npy`` file, returned as a memmap. The child process
reports its peak resident memory (``ru_maxrss``). Pass mark: peak RSS at the largest
size <= 1.2 x peak RSS at the smallest.

    python benchmarks/embed_memory.py                 # 20,000 and 200,000 images
    python benchmarks/embed_memory.py --sizes 2000 20000 --work-dir /tmp/em

Not a test: it takes minutes (about 3 ms per image on one CPU thread) and writes
about 0.5 GB of images; the folders are removed afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
SHIPPED = REPO / "benchmarks" / "checkpoints" / "cifar10-small.pt"
PASS_RATIO = 1.2


def write_folder(root: Path, n: int, seed: int = 0, per_dir: int = 1000) -> float:
    """n 64x64 JPEGs under root/NNNN/ (smooth patterns: upsampled 8x8 noise); seconds."""
    from PIL import Image

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    for first in range(0, n, per_dir):
        folder = root / f"{first // per_dir:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        count = min(per_dir, n - first)
        small = rng.integers(0, 256, size=(count, 8, 8, 3), dtype=np.uint8)
        big = small.repeat(8, axis=1).repeat(8, axis=2)
        for i in range(count):
            Image.fromarray(big[i]).save(folder / f"{first + i:07d}.jpg", quality=90)
    return time.perf_counter() - start


def child(folder: str, out: str, encoder: str, batch_size: int) -> None:
    """Embed the folder into ``out`` and print one JSON line with the peak RSS."""
    import warnings

    import torch

    torch.set_num_threads(1)
    from gaussood.deep import extract_embeddings

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # 64 px images resized to the encoder's 32 px
        feats = extract_embeddings(encoder, folder, out=out, batch_size=batch_size,
                                   device="cpu", progress=False)
    seconds = time.perf_counter() - start
    checksum = float(np.asarray(feats[-10:], dtype=np.float64).sum())
    print(json.dumps({"rows": int(feats.shape[0]), "dim": int(feats.shape[1]),
                      "seconds": seconds, "checksum_last10": checksum,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--encoder", default=str(SHIPPED))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the image folders")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, args.encoder, args.batch_size)
        return 0
    from _common import environment, write_results

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="gaussood-embed-memory-"))
    runs = []
    try:
        for n in args.sizes:
            folder = work / f"images-{n}"
            shutil.rmtree(folder, ignore_errors=True)
            made = write_folder(folder, n)
            out = work / f"emb-{n}.npy"
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(folder), str(out), "--encoder",
                 args.encoder, "--batch-size", str(args.batch_size)],
                capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            run = {"images": n, "write_folder_seconds": made,
                   **json.loads(proc.stdout.strip().splitlines()[-1])}
            runs.append(run)
            print(f"{n} images: peak RSS {run['peak_rss_mb']:.0f} MB, "
                  f"{run['seconds']:.0f} s, {run['rows']} x {run['dim']}", flush=True)
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
                out.unlink(missing_ok=True)
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    ratio = runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"]
    passed = ratio <= PASS_RATIO
    lines = ["# Peak memory of embedding an image folder", "",
             f"Folders of 64x64 JPEGs embedded by `extract_embeddings(encoder, folder, out=...)` "
             f"with `{Path(args.encoder).name}` (images resized to its 32 px), batch "
             f"{args.batch_size}, one CPU thread, each size in a fresh process. Pass mark: "
             f"peak RSS at {runs[-1]['images']:,} images <= {PASS_RATIO} x peak RSS at "
             f"{runs[0]['images']:,}.", "",
             "| images | peak RSS (MB) | embedding time (s) | images/s | output |",
             "|---|---|---|---|---|"]
    for run in runs:
        lines.append(f"| {run['images']:,} | {run['peak_rss_mb']:.0f} | {run['seconds']:.0f} | "
                     f"{run['images'] / run['seconds']:.0f} | {run['rows']:,} x {run['dim']} "
                     "float32 memmap |")
    lines += ["", f"Ratio: {ratio:.3f} -> {'PASS' if passed else 'FAIL'} "
              f"(pass mark {PASS_RATIO})."]
    write_results("embed_memory", {"runs": runs, "ratio": ratio, "pass_mark": PASS_RATIO,
                                   "passed": passed, "encoder": Path(args.encoder).name,
                                   "batch_size": args.batch_size,
                                   "environment": environment()}, "\n".join(lines))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
