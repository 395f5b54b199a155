"""Training speed of the contrastive encoders on the device found.

Measures, in one run: augmented views per second and seconds per CIFAR-10 epoch
(50,000 images, two views each) for the ``small`` convnet and the CIFAR
ResNet-18, full training steps (two batched views, forward, InfoNCE, backward,
SGD), timed inside ``train_encoder`` itself. On CPU it also compares gaussood's batched tensor augmentation with the
usual torchvision-PIL pipeline in a DataLoader (2 workers), producing the same
two SimCLR views. Images: the CIFAR-10 JPEG archive when found (GAUSSOOD_DATA or
--root), else random uint8 images (said so in the output).

Run: `python benchmarks/train_speed.py [--root ../shared/data] [--quick]`.
Writes benchmarks/results/train_speed_<device>.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, write_results  # noqa: E402

from gaussood.deep import (ImageSet, SimCLRAugment, TrainConfig, load_dataset,  # noqa: E402
                           train_encoder, two_views)
from gaussood.deep.embed import pick_device  # noqa: E402

CONFIG = {"batch_size": 256, "epoch_images": 50_000, "seed": 0,
          "steps": {"cpu": {"small": 8, "resnet18": 2}, "cuda": {"small": 50, "resnet18": 50}},
          "pil_batches": 6}


def load_images(root, n):
    try:
        data = load_dataset("cifar10", "train", root=root)
        return data.images[:n], data.source
    except FileNotFoundError:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), "random uint8 images"


def time_training(model_name, images, device, steps, batch_size):
    """views/s of ``train_encoder`` itself: epoch 2 of a run capped at ``steps`` steps
    per epoch (epoch 1 absorbs the warm-up), no k-NN monitor."""
    data = ImageSet(images=images, labels=np.zeros(len(images), dtype=np.int64),
                    name="speed", source="speed benchmark images")
    config = TrainConfig(model=model_name, epochs=2, batch_size=batch_size,
                         steps_per_epoch=steps)
    history = train_encoder(data, config, device=device, progress=False).history
    return history[-1]["views_per_s"], history[-1]["seconds"]


def time_tensor_augment(images, batch_size, batches):
    aug, gen = SimCLRAugment(), torch.Generator().manual_seed(0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    two_views(aug, x[:batch_size], gen)
    t0 = time.perf_counter()
    for b in range(batches):
        two_views(aug, x[(b * batch_size) % (len(x) - batch_size):][:batch_size], gen)
    return 2 * batch_size * batches / (time.perf_counter() - t0)


def time_pil_dataloader(images, batch_size, batches):
    from PIL import Image
    from torchvision import transforms as T

    view = T.Compose([T.RandomResizedCrop(32, scale=(0.08, 1.0)), T.RandomHorizontalFlip(),
                      T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                      T.RandomGrayscale(0.2), T.ToTensor(),
                      T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])

    class TwoViews(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            img = Image.fromarray(images[i])
            return view(img), view(img)

    loader = torch.utils.data.DataLoader(TwoViews(), batch_size=batch_size, shuffle=True,
                                         num_workers=2, drop_last=True, persistent_workers=False)
    it = iter(loader)
    next(it)  # worker start-up excluded
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return 2 * batch_size * batches / (time.perf_counter() - t0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="data root (default: GAUSSOOD_DATA)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="fewer steps; writes *_quick")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    start = time.perf_counter()
    steps = dict(CONFIG["steps"]["cuda" if device.type == "cuda" else "cpu"])
    if args.quick:
        steps = {k: 1 for k in steps}
    bs = CONFIG["batch_size"]
    images, source = load_images(args.root, max(4096, bs * max(steps.values())))
    rows, result = [], {"config": {**CONFIG, "device": str(device), "quick": args.quick},
                        "data": source, "environment": environment(), "models": {}}
    for name, n_steps in steps.items():
        vps, seconds = time_training(name, images, device, n_steps, bs)
        epoch_s = 2 * CONFIG["epoch_images"] / vps
        result["models"][name] = {"views_per_s": vps, "seconds_per_epoch": epoch_s,
                                  "timed_steps": n_steps, "timed_seconds": seconds}
        rows.append(f"| {name} | {vps:,.0f} | {epoch_s:,.0f} | {n_steps} |")
    table = [f"Training speed on {device} ({result['environment'].get('cuda') or result['environment']['cpu']}, "
             f"{result['environment']['torch_threads']} torch threads), batch {bs} images = "
             f"{2 * bs} views; data: {source}.", "",
             "| model | views/s (train step) | s per 50k-image epoch | timed steps |",
             "|---|---|---|---|", *rows]
    if device.type == "cpu":
        batches = 2 if args.quick else CONFIG["pil_batches"]
        tensor_vps = time_tensor_augment(images, bs, batches)
        pil_vps = time_pil_dataloader(images, bs, batches)
        result["augmentation"] = {"tensor_batched_views_per_s": tensor_vps,
                                  "torchvision_pil_dataloader_views_per_s": pil_vps,
                                  "ratio": tensor_vps / pil_vps, "batches": batches}
        table += ["", "Augmentation alone (two SimCLR views of 256 images per batch):", "",
                  "| pipeline | views/s |", "|---|---|",
                  f"| gaussood batched tensor (1 process) | {tensor_vps:,.0f} |",
                  f"| torchvision PIL + DataLoader (2 workers) | {pil_vps:,.0f} |",
                  f"| ratio | {tensor_vps / pil_vps:.1f}x |"]
    result["wall_time_s"] = time.perf_counter() - start
    write_results(f"train_speed_{device.type}" + ("_quick" if args.quick else ""), result,
                  "\n".join(table))


if __name__ == "__main__":
    main()
