"""Contrastive (SimCLR / InfoNCE) training of an encoder, on GPU or CPU.

Data stay on the device as uint8 tensors; both views are drawn there in batches
(``augment.SimCLRAugment``). One dictionary of hyperparameters
(``TrainConfig``); a checkpoint after every epoch holds the model, optimiser,
scheduler, history and random state, so an interrupted run resumes where it
stopped and ends where an uninterrupted one would. Each epoch reports the
weighted k-NN top-1 accuracy of the backbone features on held-out images.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .augment import SimCLRAugment, two_views
from .checkpoint import (
    CHECKPOINT_FORMAT,
    VERSION,
    atomic_torch_save,
    encoder_payload,
    read_payload,
    save_encoder,
)
from .embed import embed_images, pick_device
from .loss import InfoNCELoss
from .models import Encoder


@dataclass
class TrainConfig:
    """Hyperparameters of one contrastive run (the defaults are the CPU default)."""

    model: str = "small"
    epochs: int = 4
    batch_size: int = 256
    lr: float | None = None          # None: 0.06 * batch_size / 128 (SGD, as lightly's benchmarks)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5
    temperature: float = 0.5
    norm_weight: float = 0.0         # the paper's regulariser: norm term ...
    entropy_weight: float = 0.0      # ... and batch k-NN entropy term (see loss.py)
    proj_dim: int = 128
    seed: int = 0
    steps_per_epoch: int | None = None  # cap, for smoke tests
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_bank: int = 10_000
    knn_queries: int = 2_000
    channels_last: bool = True
    compile: bool = False
    objective: str = "infonce"       # or "supervised": cross-entropy on the labels, same
                                     # architecture, head output = one logit per class

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else 0.06 * self.batch_size / 128


@dataclass
class TrainResult:
    model: Encoder
    history: list = field(default_factory=list)
    checkpoint: Path | None = None


def knn_top1(bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray,
             query_labels: np.ndarray, k: int = 200, temperature: float = 0.1) -> float:
    """Weighted k-NN top-1 accuracy on cosine similarity (Wu et al. 2018).

    Each of the k nearest bank features votes for its class with weight
    exp(similarity / temperature); neighbours come from ``KNNScorer``.
    """
    from ..knn import KNNScorer

    knn = KNNScorer(n_neighbors=min(k, bank.shape[0]), contamination=0.5).fit(bank)
    sims, ids = knn.kneighbors(queries)
    n_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    votes = np.zeros((queries.shape[0], n_classes))
    np.add.at(votes, (np.arange(queries.shape[0])[:, None], bank_labels[ids]),
              np.exp(sims / temperature))
    return float(np.mean(votes.argmax(axis=1) == query_labels))


def _schedule(config: TrainConfig, steps_per_epoch: int):
    total = max(1, config.epochs * steps_per_epoch)
    warmup = int(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return factor


def _subset(n_total: int, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:min(n, n_total)])


def train_encoder(train_set, config: TrainConfig | None = None, *, eval_set=None,
                  checkpoint_dir=None, device="auto", resume: bool = True,
                  progress: bool = True, stop_after: int | None = None,
                  snapshots: bool = False) -> TrainResult:
    """Train an encoder with InfoNCE on ``train_set`` (an ``ImageSet``).

    With ``config.objective == "supervised"`` the same architecture is trained
    with cross-entropy on the labels instead (the head outputs one logit per
    class; both augmented views of each image are used, so the budget in views
    matches the contrastive run). This is the baseline of the Gaussianity study.

    Parameters
    ----------
    eval_set : ImageSet, optional
        Held-out labelled images for the per-epoch k-NN monitor (the bank is
        a fixed subset of ``train_set``).
    checkpoint_dir : path, optional
        ``last.pt`` is written there after every epoch; with ``resume=True`` a
        run continues from it.
    stop_after : int, optional
        Stop after this many epochs in this call (simulates an interruption).
    snapshots : bool
        Also write ``epoch<N>.pt`` (an fp16 encoder file) after every epoch into
        ``checkpoint_dir``, for studies across epochs.
    """
    config = config or TrainConfig()
    device = pick_device(device)
    n = len(train_set)
    steps = n // config.batch_size
    if steps < 1:
        raise ValueError(f"batch_size={config.batch_size} is larger than the {n} training images.")
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)

    if config.objective not in ("infonce", "supervised"):
        raise ValueError(f"objective must be 'infonce' or 'supervised'; got {config.objective!r}.")
    if snapshots and checkpoint_dir is None:
        raise ValueError("snapshots=True needs a checkpoint_dir.")
    supervised = config.objective == "supervised"
    proj_dim = config.proj_dim
    if supervised:
        if train_set.labels is None or train_set.labels.min() < 0:
            raise ValueError("objective='supervised' needs a labelled training set.")
        proj_dim = int(train_set.labels.max()) + 1
        labels = torch.from_numpy(train_set.labels.astype(np.int64)).to(device)

    torch.manual_seed(config.seed)
    model = Encoder(config.model, proj_dim).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate(),
                                momentum=config.momentum, weight_decay=config.weight_decay,
                                nesterov=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, steps))
    criterion = (torch.nn.CrossEntropyLoss() if supervised
                 else InfoNCELoss(config.temperature, norm_weight=config.norm_weight,
                                 entropy_weight=config.entropy_weight))
    augment = SimCLRAugment()
    step_fn = torch.compile(model) if config.compile else model

    history, start_epoch = [], 0
    path = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None
    if path is not None and resume and path.is_file():
        state = read_payload(path)
        if state["format"] != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is an encoder file, not a training checkpoint.")
        saved = {k: v for k, v in state["config"].items() if k != "epochs"}
        if saved != {k: v for k, v in asdict(config).items() if k != "epochs"}:
            raise ValueError(f"{path} was written with another configuration; use a new "
                             "checkpoint_dir or resume=False.")
        model.load_state_dict(state["encoder"]["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        history, start_epoch = list(state["history"]), int(state["epoch"])

    images = torch.from_numpy(train_set.images).to(device).permute(0, 3, 1, 2)
    monitor = None
    if eval_set is not None:
        bank = _subset(n, config.knn_bank, config.seed)
        queries = _subset(len(eval_set), config.knn_queries, config.seed + 1)
        monitor = (train_set.images[bank], train_set.labels[bank],
                   eval_set.images[queries], eval_set.labels[queries])

    end_epoch = config.epochs if stop_after is None else min(config.epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, end_epoch):
        model.train()
        gen = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=gen, device=device)
        t0, total = time.perf_counter(), 0.0
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress)
        for step in bar:
            index = perm[step * config.batch_size:(step + 1) * config.batch_size]
            batch = images[index]
            v1, v2 = two_views(augment, batch, gen)
            views = torch.cat([v1, v2])
            if config.channels_last:
                views = views.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                _, z = step_fn(views)
            loss = (criterion(z.float(), labels[index].repeat(2)) if supervised
                    else criterion(*z.float().chunk(2)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
            bar.set_postfix(loss=f"{float(loss):.3f}")
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "loss": total / steps, "seconds": seconds,
                  "views_per_s": 2 * steps * config.batch_size / seconds,
                  "lr": scheduler.get_last_lr()[0], "knn_top1": None}
        if monitor is not None:
            bank_x, bank_y, query_x, query_y = monitor
            feats = [embed_images(model, x, device=device) for x in (bank_x, query_x)]
            record["knn_top1"] = knn_top1(feats[0], bank_y, feats[1], query_y,
                                          config.knn_k, config.knn_temperature)
        history.append(record)
        if progress:
            knn = "" if record["knn_top1"] is None else f", kNN top-1 {100 * record['knn_top1']:.1f}%"
            tqdm.write(f"epoch {epoch + 1}: loss {record['loss']:.4f}, "
                       f"{record['views_per_s']:.0f} views/s{knn}")
        if path is not None:
            atomic_torch_save({
                "format": CHECKPOINT_FORMAT, "version": VERSION, "config": asdict(config),
                "encoder": encoder_payload(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "history": history,
                "rng": torch.get_rng_state()}, path)
            if snapshots:
                save_encoder(model, path.parent / f"epoch{epoch + 1}.pt", half=True)
    return TrainResult(model.eval(), history, path)
