"""Contrastive (SimCLR / InfoNCE) training of an encoder, on GPU or CPU.

Data stay on the device as uint8 tensors; views are drawn there in batches
(``augment.SimCLRAugment``). One dictionary of hyperparameters (``TrainConfig``).

The run is a fixed number of optimiser steps, decided once at the first start and
stored in the checkpoint: ``epochs x steps per epoch``, or, with ``budget_minutes``,
what a timed warm-up says fits in that wall-clock budget. The learning-rate schedule
(warm-up then cosine) spans exactly those steps, so a resumed run never re-measures
and ends where an uninterrupted one would.

A checkpoint (model, optimiser, scheduler, history, random states, the position
inside the epoch, and the training data's fingerprint) is written at every epoch
end and at least every ``checkpoint_minutes`` of wall clock, mid-epoch too; a run
resumes exactly from it, and refuses to resume on other data or with a changed
configuration field that shapes the run.

Recipe options for CPU budgets: progressive resolution (``resolution="16:0.75,32"``:
16 px crops for the first 75% of the steps, then 32 px) and multi-crop
(``small_crops``: extra low-resolution crops, each a positive of both global views).
The k-NN monitor (weighted top-1 of the backbone features at the images' native
size) runs every ``knn_every`` epochs and at the end.

Multi-process training (``train_encoder(..., nproc=N)``, or under ``torchrun``):
``DistributedDataParallel`` over N ranks. ``batch_size`` stays the global batch, the
same images as a single-process run (cut from the same per-epoch permutation), split
into N equal shards, one per rank; the default learning rate is unchanged, so a
configuration means the same run whatever N is. The InfoNCE loss gathers the
embeddings of every rank (``distributed.py``); rank 0 writes the checkpoints, shows
progress and runs the k-NN monitor.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import (
    CHECKPOINT_FORMAT,
    VERSION,
    atomic_torch_save,
    encoder_payload,
    read_payload,
    save_encoder,
)
from ..provenance import data_fingerprint  # noqa: F401 - re-exported (the one definition)
from .embed import embed_images, pick_device
from .loss import InfoNCELoss, SupConLoss
from .models import Encoder
from .monitor import ood_proxies, proxy_auroc
from .rotation import check_rotation_config, rotation_head
from .step import _seconds_per_step, _Step, parse_resolution  # noqa: F401 - re-exported


@dataclass
class TrainConfig:
    """Hyperparameters of one contrastive run (the defaults are the CPU default)."""

    model: str = "small"
    epochs: int = 4
    batch_size: int = 256
    lr: float | None = None          # None: 0.06 * batch_size / 128 (SGD, as lightly's benchmarks)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5       # capped at a quarter of the run
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
                                     # architecture, head output = one logit per class;
                                     # or "supcon": InfoNCE whose positives are the other
                                     # views of the same class (SupConLoss)
    supcon_weight: float = 1.0       # "supcon": loss = w * SupCon + (1 - w) * InfoNCE
    budget_minutes: float | None = None  # train for this many minutes (replaces epochs)
    checkpoint_minutes: float = 10.0     # wall clock between checkpoints (mid-epoch too)
    resolution: str = "32"           # crop side per phase, e.g. "16:0.75,32" (see above)
    crop_min_scale: float = 0.08     # RandomResizedCrop area range (lo, 1) of the views
    small_crops: int = 0             # extra crops per image at half the current side ...
    small_crop_scale: float = 0.14   # ... with area fraction in (0.05, small_crop_scale)
    knn_every: int = 1               # epochs between k-NN evaluations (and at the end)
    steps: int | None = None         # exactly this many steps (replaces epochs and budget;
                                     # reruns a budgeted run on another machine)
    rotation: str = "none"           # "negatives": one random quarter turn per image, both
                                     # views turned alike; "predict": also a 4-way rotation
                                     # head (see rotation.py)
    rotation_negatives: float = 0.0  # fraction of the batch with an extra view at another
                                     # rotation, as explicit negatives
    rotation_weight: float = 1.0     # weight of the rotation cross-entropy ("predict")
    proxy_monitor: bool = True       # OOD-proxy AUROC next to the k-NN monitor (monitor.py)

    def learning_rate(self) -> float:
        """``lr``, else 0.06 x batch_size (the global batch, whatever the processes) / 128."""
        return self.lr if self.lr is not None else 0.06 * self.batch_size / 128


# Most optimiser steps a run may have (first start or resume): 10**8 steps is years of
# CPU training; a checkpoint declaring more is refused, not trained without end.
MAX_STEPS = 10**8

# Fields that do not change the sequence of optimiser steps: free to differ on resume.
# (``epochs`` and ``budget_minutes`` only size the run at its first start.)
_NOT_SHAPING = {"epochs", "budget_minutes", "steps", "checkpoint_minutes", "knn_k", "knn_temperature",
                "knn_bank", "knn_queries", "knn_every", "compile", "proxy_monitor"}


@dataclass
class TrainResult:
    model: Encoder
    history: list = field(default_factory=list)
    checkpoint: Path | None = None
    total_steps: int = 0
    rank: int = 0                    # under torchrun: this process's rank (0 writes outputs)
    world_size: int = 1              # processes (DDP ranks) that trained it


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


def _schedule(config: TrainConfig, steps_per_epoch: int, total: int):
    total = max(1, total)
    warmup = min(int(config.warmup_epochs * steps_per_epoch), total // 4)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return factor


def _subset(n_total: int, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:min(n, n_total)])


def _check_resume(path: Path, state: dict, config: TrainConfig, fingerprint: dict,
                  world: int = 1, stacklevel: int = 3) -> None:
    if state["format"] != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is an encoder file, not a training checkpoint.")
    saved_world = int(state.get("world_size", 1))  # written only when > 1
    if saved_world != world:
        raise ValueError(
            f"{path} was written by a run on {saved_world} process(es); this run has "
            f"{world}. Resume with nproc={saved_world} (the BatchNorm statistics are per "
            "rank and the augmentations are seeded per rank, so the number of processes "
            "shapes the run), or use a new checkpoint_dir or resume=False.")
    _check_resume_entries(path, state)
    saved = state["config"]
    defaults = asdict(TrainConfig())
    changed = [f"{name}: {saved.get(name, defaults[name])!r} -> {value!r}"
               for name, value in asdict(config).items()
               if name not in _NOT_SHAPING and saved.get(name, defaults[name]) != value]
    if changed:
        raise ValueError(f"{path} was written with another configuration ({'; '.join(changed)}); "
                         "use a new checkpoint_dir or resume=False.")
    data = state.get("data")
    if data is None:
        warnings.warn(f"{path} does not record its training data (written by an older "
                      "gaussood); resuming without checking that the data are the same.",
                      UserWarning, stacklevel=stacklevel)
    elif data["sha256"] != fingerprint["sha256"]:
        raise ValueError(
            f"{path} was trained on other data ({data['name']}, n={data['n']}, classes "
            f"{data['classes']}, sha256 {data['sha256'][:12]}...) than this run's "
            f"({fingerprint['name']}, n={fingerprint['n']}, classes {fingerprint['classes']}, "
            f"sha256 {fingerprint['sha256'][:12]}...); use a new checkpoint_dir or resume=False.")


def _check_resume_entries(path: Path, state: dict) -> None:
    """The entries a resume reads, with their types and bounds: a clear error, not an
    AttributeError (``config="x"``) or a run without end (``total_steps=10**12``)."""
    if not isinstance(state.get("config"), dict):
        raise ValueError(f"{path}: the checkpoint's 'config' entry is a "
                         f"{type(state.get('config')).__name__}, not a dict (edited or corrupted).")
    if not isinstance(state.get("history", []), list):
        raise ValueError(f"{path}: the checkpoint's 'history' entry is not a list.")
    numbers = {}
    for key in ("step", "total_steps", "epoch"):
        value = state.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{path}: the checkpoint's {key!r} entry is {value!r}, not a "
                             "non-negative integer.")
        numbers[key] = value
    if "total_steps" in state:
        step, total = numbers["step"], numbers["total_steps"]
        if not 1 <= total <= MAX_STEPS or step > total:
            raise ValueError(f"{path}: the checkpoint says step {step} of total_steps {total}; "
                             f"a run has 1 to {MAX_STEPS} steps and never passes its total "
                             "(edited or corrupted).")


def as_image_set(images, config: TrainConfig | None = None):
    """An ``ImageSet`` as is; any other image input of ``open_images`` (a folder, files,
    arrays, PIL images of any size, a torch Dataset) as an unlabelled ``ImageSet`` at the
    run's largest crop side (``preprocess.training_images``: shorter side, centre crop)."""
    from .data import ImageSet
    from .preprocess import training_images

    if isinstance(images, ImageSet):
        return images
    config = config or TrainConfig()
    size = max(s for s, _ in parse_resolution(config.resolution))
    array = training_images(images, size)
    what = (f"folder {images}" if isinstance(images, (str, Path)) else type(images).__name__)
    name = Path(images).name if isinstance(images, (str, Path)) else "images"
    return ImageSet(array, np.full(len(array), -1), name, [],
                    f"{what}, brought to {size}x{size} (shorter side, centre crop); "
                    f"unlabelled; N={len(array)}")


def train_encoder(train_set, config: TrainConfig | None = None, *, eval_set=None,
                  checkpoint_dir=None, device="auto", resume: bool = True,
                  progress: bool = True, stop_after: int | None = None,
                  stop_after_steps: int | None = None, should_stop=None,
                  snapshots: bool = False, nproc: int = 1) -> TrainResult:
    """Train an encoder with InfoNCE on ``train_set``: an ``ImageSet``, or any image
    input of ``open_images`` (a folder, files, arrays, PIL images of any size, a torch
    Dataset; see ``as_image_set``), unlabelled: the k-NN monitor is then off unless
    ``eval_set`` and the training set are labelled; the OOD-proxy monitor runs.

    With ``config.objective == "supervised"`` the same architecture is trained
    with cross-entropy on the labels instead (the head outputs one logit per
    class; both augmented views of each image are used, so the budget in views
    matches the contrastive run). This is the baseline of the Gaussianity study.

    With ``nproc = N > 1`` the run spawns N local processes (one per GPU on CUDA,
    gloo on CPU) and trains with ``DistributedDataParallel``; under ``torchrun``
    (RANK / WORLD_SIZE in the environment) or inside an initialised process group,
    this process is one rank, nothing is spawned and N is the world size (``nproc``
    must then be 1, the default, or that size). ``config.batch_size`` is the global
    batch, split evenly across the ranks (it must be a multiple of N), and the
    default learning rate is that of a single-process run: the configuration means
    the same run whatever N is. See ``docs/distributed-training.md``.

    Parameters
    ----------
    eval_set : ImageSet, optional
        Held-out labelled images for the k-NN monitor (the bank is a fixed subset
        of ``train_set``).
    checkpoint_dir : path, optional
        ``last.pt`` is written there at every epoch end and every
        ``config.checkpoint_minutes``; with ``resume=True`` a run continues from it.
    stop_after, stop_after_steps : int, optional
        Stop after this many epochs / optimiser steps in this call (an interruption;
        a checkpoint is written at the stop).
    should_stop : callable, optional
        Called after every step; when it returns True the run writes a checkpoint and
        returns (e.g. a deadline, or a flag set by a SIGTERM handler). Resume later.
        With ``nproc > 1`` it is called in this process while the ranks run; under
        torchrun on every rank, and the run stops when any rank asks.
    snapshots : bool
        Also write ``epoch<N>.pt`` (an fp16 encoder file) after every epoch into
        ``checkpoint_dir``, for studies across epochs.
    nproc : int
        Processes (DDP ranks), see above. A checkpoint of an N-process run records N
        (``world_size``) and resumes only with N processes.
    """
    config = config or TrainConfig()
    train_set = as_image_set(train_set, config)
    if eval_set is not None:
        eval_set = as_image_set(eval_set, config)
    if isinstance(nproc, bool) or not isinstance(nproc, numbers.Integral) or nproc < 1:
        raise ValueError(f"nproc must be an integer >= 1; got {nproc!r}.")
    nproc = int(nproc)
    options = dict(eval_set=eval_set, checkpoint_dir=checkpoint_dir, resume=resume,
                   progress=progress, stop_after=stop_after, stop_after_steps=stop_after_steps,
                   snapshots=snapshots)
    env = distributed.launched()
    if distributed.is_distributed() or (env is not None and env[1] > 1):
        world = distributed.get_world_size() if distributed.is_distributed() else env[1]
        if nproc not in (1, world):
            raise ValueError(f"nproc={nproc}, but this process is one of {world} ranks "
                             "(torchrun's WORLD_SIZE or an initialised process group).")
        local = env[2] if env is not None else distributed.get_rank()
        device = distributed.rank_device(pick_device(device), local)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        with distributed.process_group(distributed.backend_for(device)):
            return _train(train_set, config, device=device, should_stop=should_stop, **options)
    if nproc == 1:
        return _train(train_set, config, device=pick_device(device), should_stop=should_stop,
                      **options)
    # N local processes: check everything a rank would refuse here, where errors are clear
    _validate(train_set, config, snapshots, checkpoint_dir, nproc)
    path = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None
    if path is not None and resume and path.is_file():
        _check_resume(path, read_payload(path), config, data_fingerprint(train_set), nproc)
    device = pick_device(device)
    out = distributed.spawn(_train_rank, nproc, (train_set, config, str(device), options),
                            device_type=device.type, should_stop=should_stop)
    model = Encoder(config.model, out["proj_dim"])
    model.load_state_dict(out["state_dict"])
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return TrainResult(model.eval(), out["history"], path, out["total_steps"], 0, nproc)


def _train_rank(train_set, config, device, options, should_stop):
    """One spawned rank: train, and hand rank 0's result back (plain containers)."""
    device = distributed.rank_device(torch.device(device), distributed.get_rank())
    result = _train(train_set, config, device=device, should_stop=should_stop, **options)
    return {"state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
            "proj_dim": result.model.proj_dim, "history": result.history,
            "total_steps": result.total_steps}


def _monitors(train_set, eval_set, config: TrainConfig):
    """What the monitors look at: the k-NN tuple (bank images and labels, query images
    and labels; None without labels on both sides) and the OOD-proxy tuple (bank images,
    held-out ID images, proxy sets made from the held-out images; None when off).

    Held-out ID images: the k-NN queries of ``eval_set``; without one, a fixed subset of
    the training images left out of the bank (seen in training, not in the bank)."""
    n = len(train_set)
    if eval_set is not None:
        bank = _subset(n, config.knn_bank, config.seed)
        held = eval_set.images[_subset(len(eval_set), config.knn_queries, config.seed + 1)]
    else:
        held_ids = _subset(n, min(config.knn_queries, n // 5), config.seed + 1)
        rest = np.setdiff1d(np.arange(n), held_ids)
        bank = rest[_subset(len(rest), config.knn_bank, config.seed)]
        held = train_set.images[held_ids]
    knn = None
    if (eval_set is not None and n and train_set.labels.min() >= 0 and len(eval_set)
            and eval_set.labels.min() >= 0):
        queries = _subset(len(eval_set), config.knn_queries, config.seed + 1)
        knn = (train_set.images[bank], train_set.labels[bank], eval_set.images[queries],
               eval_set.labels[queries])
    proxies = None
    if config.proxy_monitor and len(held) >= 2 and len(bank) >= 2:
        proxies = (train_set.images[bank], held,
                   ood_proxies(held, config.seed, rotated=config.rotation == "none"))
    return knn, proxies


def _validate(train_set, config: TrainConfig, snapshots: bool, checkpoint_dir,
              world: int = 1) -> int:
    """Check the configuration against the data (and ``world`` processes); return the
    steps per epoch."""
    n = len(train_set)
    if world > 1 and config.batch_size % world:
        raise ValueError(f"batch_size={config.batch_size} is the global batch and must split "
                         f"evenly across the {world} processes; use a multiple of {world}.")
    steps_per_epoch = n // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size={config.batch_size} is larger than the {n} training images.")
    if config.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.steps_per_epoch)
    parse_resolution(config.resolution)
    if config.objective not in ("infonce", "supervised", "supcon"):
        raise ValueError(f"objective must be 'infonce', 'supervised' or 'supcon'; got "
                         f"{config.objective!r}.")
    if config.budget_minutes is not None and not config.budget_minutes > 0:
        raise ValueError(f"budget_minutes must be > 0; got {config.budget_minutes!r}.")
    if config.steps is not None and not 1 <= config.steps <= MAX_STEPS:
        raise ValueError(f"steps must be in 1..{MAX_STEPS}; got {config.steps!r}.")
    if not config.checkpoint_minutes > 0 or config.knn_every < 1 or config.small_crops < 0:
        raise ValueError("checkpoint_minutes must be > 0, knn_every >= 1, small_crops >= 0.")
    if snapshots and checkpoint_dir is None:
        raise ValueError("snapshots=True needs a checkpoint_dir.")
    if config.objective in ("supervised", "supcon"):
        if config.small_crops:
            raise ValueError("small_crops applies to objective='infonce' only.")
        if train_set.labels is None or not len(train_set) or train_set.labels.min() < 0:
            raise ValueError(f"objective={config.objective!r} needs a labelled training set.")
    if not (isinstance(config.supcon_weight, (int, float)) and 0 <= config.supcon_weight <= 1):
        raise ValueError(f"supcon_weight must be in [0, 1]; got {config.supcon_weight!r}.")
    if config.supcon_weight != 1 and config.objective != "supcon":
        raise ValueError("supcon_weight applies to objective='supcon' only.")
    if config.objective == "supcon" and world > 1:  # rotation: check_rotation_config
        raise ValueError("objective='supcon' runs in one process (its positives are not "
                         "gathered across ranks); use nproc=1.")
    check_rotation_config(config, world)
    return steps_per_epoch


def _train(train_set, config: TrainConfig, *, eval_set, checkpoint_dir, device, resume,
           progress, stop_after, stop_after_steps, should_stop, snapshots) -> TrainResult:
    """The training loop of one process: alone, or one rank of a process group."""
    rank, world = distributed.get_rank(), distributed.get_world_size()
    main = rank == 0
    progress = progress and main
    n = len(train_set)
    steps_per_epoch = _validate(train_set, config, snapshots, checkpoint_dir, world)
    phases = parse_resolution(config.resolution)
    supervised = config.objective == "supervised"
    proj_dim, labels = config.proj_dim, None
    if supervised:
        proj_dim = int(train_set.labels.max()) + 1
    if config.objective in ("supervised", "supcon"):
        labels = torch.from_numpy(train_set.labels.astype(np.int64)).to(device)
    fingerprint = data_fingerprint(train_set)

    torch.manual_seed(config.seed)
    model = Encoder(config.model, proj_dim).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    head = (rotation_head(model.feature_dim).to(device) if config.rotation == "predict"
            else None)
    params = list(model.parameters()) + ([] if head is None else list(head.parameters()))
    optimizer = torch.optim.SGD(params, lr=config.learning_rate(),
                                momentum=config.momentum, weight_decay=config.weight_decay,
                                nesterov=True)
    loss_class = (SupConLoss if config.objective == "supcon"
                  else distributed.GatheredInfoNCELoss if world > 1 else InfoNCELoss)
    mix = {"weight": config.supcon_weight} if config.objective == "supcon" else {}
    criterion = (torch.nn.CrossEntropyLoss() if supervised
                 else loss_class(config.temperature, norm_weight=config.norm_weight,
                                 entropy_weight=config.entropy_weight, **mix))
    images = torch.from_numpy(train_set.images).to(device).permute(0, 3, 1, 2)

    path = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None
    state = None
    if path is not None and resume and path.is_file():
        state = read_payload(path)
        _check_resume(path, state, config, fingerprint, world, stacklevel=4)  # the caller's
    wrapped = distributed.wrap_model(model, device)  # DDP when multi-process
    history, start, elapsed, acc, gen_state = [], 0, 0.0, [0.0, 0.0, 0], None
    timing = None
    if state is not None:
        total = int(state.get("total_steps", state["config"].get("epochs", config.epochs)
                              * steps_per_epoch))
        start = int(state.get("step", int(state["epoch"]) * steps_per_epoch))
        history, elapsed = list(state["history"]), float(state.get("elapsed", 0.0))
        acc, gen_state, timing = list(state.get("epoch_acc", acc)), state.get("gen"), state.get(
            "timing")
    elif config.steps is not None:
        total = config.steps
    elif config.budget_minutes is not None:
        probe = _Step(config, model, optimizer, None, criterion, labels, device,
                      rotation_head=head)
        measured = _seconds_per_step(probe, images, [s for s, _ in phases],
                                     config.batch_size // world, device)  # one rank's shard
        measured = distributed.broadcast_object(measured)  # every rank: rank 0's timing
        mean_step, begin = 0.0, 0.0
        for size, end in phases:
            mean_step, begin = mean_step + (end - begin) * measured[size], end
        total = max(1, int(config.budget_minutes * 60 / mean_step))
        timing = {"seconds_per_step": {str(k): v for k, v in measured.items()},
                  "mean_seconds_per_step": mean_step, "total_steps": total}
        if progress:
            tqdm.write(f"budget {config.budget_minutes:g} min: {mean_step:.3f} s/step "
                       f"measured -> {total} steps ({total / steps_per_epoch:.1f} epochs)")
    else:
        total = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  _schedule(config, steps_per_epoch, total))
    step_fn = _Step(config, model, optimizer, scheduler, criterion, labels, device, wrapped,
                    rotation_head=head)
    if state is not None:
        model.load_state_dict(state["encoder"]["state_dict"])
        if head is not None:
            head.load_state_dict(state["rotation_head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])

    monitor, proxies = (_monitors(train_set, eval_set, config) if main else (None, None))

    def save(step, gen):
        if path is None or not main:
            return
        payload = {
            "format": CHECKPOINT_FORMAT, "version": VERSION, "config": asdict(config),
            "encoder": encoder_payload(model), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": step // steps_per_epoch,
            "step": step, "total_steps": total, "history": history, "elapsed": elapsed,
            "epoch_acc": acc, "rng": torch.get_rng_state(),
            "gen": None if gen is None else gen.get_state(), "data": fingerprint,
            "timing": timing}
        if head is not None:  # only then: other checkpoints are as they always were
            payload["rotation_head"] = head.state_dict()
        if world > 1:  # only then: single-process checkpoints are as they always were
            payload["world_size"] = world
        atomic_torch_save(payload, path)

    end = total
    if stop_after is not None:
        end = min(end, (start // steps_per_epoch + stop_after) * steps_per_epoch)
    if stop_after_steps is not None:
        end = min(end, start + stop_after_steps)
    gen, perm, last_save = None, None, time.monotonic()
    bar = tqdm(range(start, end), desc="train", disable=not progress, mininterval=2.0)
    for step in bar:
        epoch, k = divmod(step, steps_per_epoch)
        if perm is None or k == 0:
            gen = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + epoch)
            perm = torch.randperm(n, generator=gen, device=device)
            if k and gen_state is not None:  # resumed mid-epoch
                gen.set_state(gen_state)
        views_gen = gen
        if world > 1:  # every rank its own views, reseeded per step (resumes need no state)
            views_gen = torch.Generator(device=device).manual_seed(
                distributed.view_seed(config.seed, step, rank))
        size = next(s for s, e in phases if step < e * total)
        model.train()
        t0 = time.perf_counter()
        index = distributed.shard(perm[k * config.batch_size:(k + 1) * config.batch_size],
                                  rank, world)  # the whole batch when alone
        loss = distributed.mean_over_ranks(  # the global-batch loss
            step_fn(images[index], index, size, views_gen))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        acc = [acc[0] + loss, acc[1] + seconds, acc[2] + 1]
        elapsed += seconds
        bar.set_postfix(loss=f"{loss:.3f}", px=size, epoch=epoch + 1, refresh=False)
        epoch_end = k == steps_per_epoch - 1 or step == total - 1
        if epoch_end:
            record = {"epoch": epoch + 1, "step": step + 1, "views": 2 * (step + 1) *
                      config.batch_size, "resolution": size, "loss": acc[0] / acc[2],
                      "seconds": acc[1], "elapsed": elapsed,
                      "views_per_s": 2 * acc[2] * config.batch_size / acc[1],
                      "lr": scheduler.get_last_lr()[0], "knn_top1": None, "proxy_auroc": None}
            if (epoch + 1) % config.knn_every == 0 or step == total - 1:
                if monitor is not None:
                    bank_x, bank_y, query_x, query_y = monitor
                    feats = [embed_images(model, x, device=device) for x in (bank_x, query_x)]
                    record["knn_top1"] = knn_top1(feats[0], bank_y, feats[1], query_y,
                                                  config.knn_k, config.knn_temperature)
                if proxies is not None:
                    record["proxy_auroc"] = proxy_auroc(
                        lambda x: embed_images(model, x, device=device), *proxies)
            history.append(record)
            acc = [0.0, 0.0, 0]
            if progress:
                knn = ("" if record["knn_top1"] is None
                       else f", kNN top-1 {100 * record['knn_top1']:.1f}%")
                if record["proxy_auroc"] is not None:
                    knn += ", proxy AUROC " + " ".join(
                        f"{k} {100 * v:.1f}" for k, v in record["proxy_auroc"].items())
                tqdm.write(f"epoch {epoch + 1} (step {step + 1}/{total}, {size} px): loss "
                           f"{record['loss']:.4f}, {record['views_per_s']:.0f} views/s, "
                           f"{elapsed / 60:.1f} min{knn}")
        stop = distributed.any_rank(should_stop is not None and bool(should_stop()))
        if (epoch_end or step == end - 1 or stop
                or time.monotonic() - last_save >= 60 * config.checkpoint_minutes):
            save(step + 1, None if epoch_end or world > 1 else gen)
            last_save = time.monotonic()
            if snapshots and epoch_end and main:
                save_encoder(model, path.parent / f"epoch{epoch + 1}.pt", half=True)
        if stop:
            if progress:
                tqdm.write(f"stopped on request after step {step + 1} of {total}"
                           + ("" if path is None else f"; resume from {path}"))
            break
    bar.close()
    return TrainResult(model.eval(), history, path, total, rank, world)


__all__ = ["TrainConfig", "TrainResult", "train_encoder", "as_image_set", "knn_top1", "data_fingerprint",
           "parse_resolution"]
