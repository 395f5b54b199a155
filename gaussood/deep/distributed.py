"""Multi-process InfoNCE training: ranks, the gathered loss, launching local processes.

``train_encoder(..., nproc=N)`` runs in N local processes (spawned here; gloo on CPU,
NCCL on CUDA, one GPU per process), or under ``torchrun`` (the environment's RANK /
WORLD_SIZE / LOCAL_RANK name the process; nothing is spawned). The model is wrapped
in ``DistributedDataParallel``; every step each rank embeds its shard of the global
batch (``TrainConfig.batch_size``, split evenly), and the loss is computed on the
embeddings of all ranks.

Gathering with gradients. A plain ``all_gather`` returns tensors without autograd
history, and the widely copied "GatherLayer" hands each rank back only the gradient
its own loss puts on its own rows: the terms that the other ranks' anchors put on
this rank's embeddings (as negatives and as nearest neighbours) are dropped (lightly
fixed this in its PR #1531). ``all_gather_with_grad`` sums the gradients of the
gathered tensor over all ranks in its backward (an all-reduce), so every rank's
embeddings get the gradient of every rank's loss.

Loss scaling. Rank r computes the mean loss over its own 2n anchors ``L_r`` against
all 2Wn gathered embeddings (``GatheredInfoNCELoss``); the global-batch loss is
``L = mean_r L_r``. The backward all-reduce gives rank r's embeddings
``sum_r' dL_r'/dz_r = W dL/dz_r``, and DDP averages the parameter gradients over the
W ranks, so the parameters get exactly ``dL/dtheta``: the single-process gradient of
the global-batch loss (with BatchNorm statistics per shard; tested in
``tests/deep/test_distributed.py`` with 2 gloo processes).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .loss import InfoNCELoss, knn_entropy, norm_penalty

# ------------------------------------------------------------------ rank and world


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes in the group (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def launched() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from a launcher's environment (``torchrun`` sets
    RANK, WORLD_SIZE and LOCAL_RANK), or None when the process was not launched so."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be integers; got "
                         f"{os.environ.get('RANK')!r}, {os.environ.get('WORLD_SIZE')!r}, "
                         f"{os.environ.get('LOCAL_RANK')!r}.") from None
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world}).")
    return rank, world, local


def is_main_process() -> bool:
    """Rank 0 of a process group or of a launcher's environment (True when alone)."""
    env = launched()
    return get_rank() == 0 and (env is None or env[0] == 0)


def backend_for(device: torch.device) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """The device of the process with this local rank: ``cuda:<local_rank>`` on CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return device
    if local_rank >= torch.cuda.device_count():
        raise ValueError(f"local rank {local_rank} needs GPU {local_rank}, but only "
                         f"{torch.cuda.device_count()} are visible.")
    return torch.device("cuda", local_rank)


@contextmanager
def process_group(backend: str, *, init_method: str = "env://", rank: int | None = None,
                  world_size: int | None = None):
    """Initialise the default process group unless one is already there; destroy only
    the one created here on exit."""
    created = not dist.is_initialized()
    if created:
        kwargs = {} if rank is None else {"rank": rank, "world_size": world_size}
        dist.init_process_group(backend, init_method=init_method, **kwargs)
    try:
        yield
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


# ------------------------------------------------------------------ collectives


class _AllGather(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradients over all ranks (all-reduce)
    and returns this rank's slice: the same as ``torch.distributed.nn.functional.
    all_gather`` followed by ``torch.cat`` (which newer torch marks deprecated)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` (n, ...) from every rank, in rank order: shape (world * n, ...).

    Differentiable: the gradient that reaches rank r's rows is the sum over all ranks
    of the gradients put on those rows. Every rank must pass the same shape. Outside a
    process group, ``x`` itself."""
    if not is_distributed():
        return x
    return _AllGather.apply(x)


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (picklable objects; identity when alone)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def mean_over_ranks(loss: torch.Tensor) -> float:
    """The mean over ranks of the scalar ``loss`` (each rank's share of the global-batch
    loss; their mean is that loss), as a float; ``float(loss)`` when alone."""
    if not is_distributed():
        return float(loss)
    loss = loss.detach().reshape(()).clone()
    dist.all_reduce(loss, op=dist.ReduceOp.SUM)
    return float(loss) / dist.get_world_size()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any (so that a stop asked by one
    rank stops all after the same step); ``flag`` itself when alone."""
    if not is_distributed():
        return bool(flag)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
        else torch.device("cpu")
    value = torch.tensor(float(bool(flag)), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value > 0)


# ------------------------------------------------------------------ the gathered loss


class GatheredInfoNCELoss(InfoNCELoss):
    """``InfoNCELoss`` over the global batch of all ranks, each rank's rows as anchors.

    Every rank passes its shard (z1, z2), each (n, D). The shards are gathered with
    ``gather`` (default ``all_gather_with_grad``) into the global (Wn, D) batches Z1, Z2
    in rank order; rank r's 2n rows of [Z1; Z2] are the anchors, every other row of
    the 2Wn is a negative. The returned value is this rank's share ``L_r``: the mean
    over its 2n anchors of the InfoNCE term, plus ``norm_weight`` times the mean
    squared norm of its 2n rows, minus ``entropy_weight`` times its rows' share of the
    k-NN entropy of Z1 and of Z2 (nearest neighbours searched in the gathered batch;
    see ``knn_entropy(rows=...)``), halved as in ``InfoNCELoss``.

    The mean of ``L_r`` over ranks equals ``InfoNCELoss`` on (Z1, Z2), and with DDP's
    gradient averaging the parameters get that loss's gradient (see the module
    docstring). Outside a process group this is ``InfoNCELoss`` up to round-off.
    """

    def __init__(self, temperature: float = 0.5, norm_weight: float = 0.0,
                 entropy_weight: float = 0.0,
                 gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__(temperature, norm_weight, entropy_weight)
        self.gather = gather or all_gather_with_grad

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """This rank's share of the global-batch loss; z1, z2: its shard, (n, D) -> scalar."""
        n = self._check_pair(z1, z2, min_rows=1)
        rank, world = get_rank(), get_world_size()
        gathered = self.gather(torch.cat([z1, z2], dim=1))     # (W n, 2 D)
        if gathered.shape[0] != world * n:
            raise ValueError(f"the gathered batch has {gathered.shape[0]} rows, not "
                             f"{world} x {n}: every rank must pass the same shard size")
        big_n = world * n
        if big_n < 2:
            raise ValueError(f"need N >= 2 pairs in the global batch, got N={big_n}")
        d = z1.shape[1]
        z = torch.cat([gathered[:, :d], gathered[:, d:]], dim=0)  # [Z1; Z2], (2 W n, D)
        own = torch.arange(rank * n, (rank + 1) * n, device=z.device)
        anchors = torch.cat([own, own + big_n])
        zn = torch.nn.functional.normalize(z, dim=1)
        logits = zn[anchors] @ zn.T / self.temperature          # (2n, 2Wn)
        self_mask = torch.zeros_like(logits, dtype=torch.bool)
        self_mask[torch.arange(2 * n, device=z.device), anchors] = True
        logits = logits.masked_fill(self_mask, float("-inf"))
        target = torch.cat([own + big_n, own])
        loss = torch.nn.functional.cross_entropy(logits, target)
        if self.norm_weight > 0:
            loss = loss + norm_penalty(z[anchors], self.norm_weight)
        if self.entropy_weight > 0:
            rows = slice(rank * n, (rank + 1) * n)
            loss = loss - self.entropy_weight * 0.5 * (knn_entropy(z[:big_n], rows)
                                                       + knn_entropy(z[big_n:], rows))
        return loss


# ------------------------------------------------------------------ model and data


def wrap_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``model`` (on ``device``); the model itself
    when alone. BatchNorm statistics stay per rank (per shard)."""
    if not is_distributed():
        return model
    device = torch.device(device)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def shard(batch: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous part of a global batch of indices (equal parts)."""
    if batch.shape[0] % world:
        raise ValueError(f"a global batch of {batch.shape[0]} does not split into {world} "
                         "equal shards")
    n = batch.shape[0] // world
    return batch[rank * n:(rank + 1) * n]


def view_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the augmentation generator of one rank at one step (distinct per rank,
    so that the ranks do not draw the same crops; per step, so that a resumed run needs
    no generator state)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0]
               >> np.uint64(1))


# ------------------------------------------------------------------ launching


def spawn(fn: Callable, nproc: int, args: tuple = (), *, device_type: str = "cpu",
          should_stop: Callable[[], bool] | None = None, threads: int | None = None,
          start_method: str | None = None):
    """Run ``fn(*args, should_stop=...)`` in ``nproc`` new local processes, one rank
    each, inside a process group (gloo on CPU, NCCL on CUDA with ``cuda:<rank>``;
    rendezvous through a file in a temporary folder, so no port is needed); return
    rank 0's return value (saved with ``torch.save``; tensors and plain containers).

    The processes start from a fork server where the platform has one (it imports
    torch, the modules DDP needs and gaussood's training code once per calling
    process, not once per rank and launch; it never touches CUDA), else by spawning;
    ``start_method`` overrides.
    ``fn`` and ``args`` must be picklable (``fn`` a module-level function).

    ``should_stop`` is polled here, in the calling process, while the ranks run; once
    it returns True the ranks' ``should_stop`` returns True too (e.g. a SIGTERM
    handler of the caller). ``threads``: torch CPU threads per rank (default: the
    caller's). An error in a rank is raised here as torch's ``ProcessRaisedException``
    (the other ranks are terminated).
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1; got {nproc!r}")
    if device_type == "cuda" and nproc > torch.cuda.device_count():
        raise ValueError(f"nproc={nproc} CUDA processes need {nproc} GPUs; "
                         f"{torch.cuda.device_count()} are visible.")
    import torch.multiprocessing as mp

    threads = threads or torch.get_num_threads()
    if start_method is None:
        import multiprocessing

        start_method = ("forkserver" if "forkserver" in multiprocessing.get_all_start_methods()
                        else "spawn")
    context = mp.get_context(start_method)
    if start_method == "forkserver":
        # once per calling process (no effect once the server runs); DDP's constructor
        # imports torch._dynamo, seconds per rank otherwise
        context.set_forkserver_preload(["torch._dynamo", "gaussood.deep.train"])
    stop = context.Event()
    with tempfile.TemporaryDirectory(prefix="gaussood-ddp-") as tmp:
        result = Path(tmp) / "result.pt"
        init = (Path(tmp) / "rendezvous").as_uri()
        context = mp.start_processes(
            _worker, args=(nproc, init, device_type, threads, fn, args, str(result), stop),
            nprocs=nproc, join=False, start_method=start_method)
        while not context.join(timeout=0.5):
            if should_stop is not None and not stop.is_set() and should_stop():
                stop.set()
        return torch.load(result, weights_only=True) if result.is_file() else None


def _worker(rank, world, init, device_type, threads, fn, args, result, stop):
    torch.set_num_threads(threads)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(rank)
    with process_group(backend, init_method=init, rank=rank, world_size=world):
        out = fn(*args, should_stop=stop.is_set)
        if rank == 0:
            torch.save(out, result)


__all__ = ["GatheredInfoNCELoss", "all_gather_with_grad", "any_rank", "broadcast_object",
           "get_rank", "get_world_size", "is_distributed", "is_main_process", "launched",
           "mean_over_ranks", "spawn", "wrap_model", "shard", "process_group", "view_seed"]
