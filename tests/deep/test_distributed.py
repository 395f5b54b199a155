"""Multi-process InfoNCE: a DDP step on 2 gloo processes equals the single-process step.

The reference is one process running the same model on the concatenated global
batch, shard by shard (BatchNorm statistics per shard, as each DDP rank computes
them; SyncBatchNorm does not run on CPU), with ``InfoNCELoss`` on the concatenated
embeddings. Every process pool is started once per module (spawning costs seconds).
"""

import dataclasses
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from gaussood.deep import TrainConfig, load_encoder, train_encoder  # noqa: E402
from gaussood.deep import distributed as ddp  # noqa: E402
from gaussood.deep.loss import InfoNCELoss, knn_entropy  # noqa: E402
from gaussood.deep.models import Encoder  # noqa: E402

WORLD, SHARD, SIDE = 2, 4, 16      # 2 ranks x 4 images (8 views each) of 16 px
# "plain": InfoNCE; "regularised": with the norm and the (gathered) entropy terms;
# "gatherlayer": the widely copied GatherLayer, whose backward keeps only this rank's
# slice of its own gradient (no all-reduce) -- must fail the same comparison
CASES = {"plain": dict(temperature=0.5),
         "regularised": dict(temperature=0.5, norm_weight=0.05, entropy_weight=0.02),
         "gatherlayer": dict(temperature=0.5)}
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}  # float32: as trained; float64: the maths


class _GatherLayerNoReduce(torch.autograd.Function):
    """The GatherLayer of many SimCLR repositories: all_gather forward; backward returns
    this rank's rows of this rank's gradient only (cross-rank terms dropped)."""

    @staticmethod
    def forward(ctx, x):
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def _model(dtype):
    torch.manual_seed(0)
    return Encoder("small", proj_dim=16).to(dtype)


def _views(dtype):
    """The global batch: two views of WORLD * SHARD images, in rank order."""
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, WORLD * SHARD, 3, SIDE, SIDE, generator=g).to(dtype)


def _grad_worker(out_dir, should_stop):
    rank, world = ddp.get_rank(), ddp.get_world_size()
    torch.manual_seed(100 + rank)  # anything rank-dependent must not matter
    for (case, kwargs), dtype in itertools.product(CASES.items(), TOL):
        v1, v2 = (ddp.shard(v, rank, world) for v in _views(dtype))
        model = ddp.wrap_model(_model(dtype).train(), torch.device("cpu"))
        gather = _GatherLayerNoReduce.apply if case == "gatherlayer" else None
        loss_fn = ddp.GatheredInfoNCELoss(**kwargs, gather=gather)
        z1, z2 = model(torch.cat([v1, v2]))[1].chunk(2)
        loss = loss_fn(z1, z2)
        loss.backward()
        value = ddp.mean_over_ranks(loss)
        assert ddp.any_rank(rank == 1) and not ddp.any_rank(False)
        torch.save({"loss": value, "share": float(loss.detach()),
                    "grads": {k: p.grad for k, p in model.module.named_parameters()}},
                   f"{out_dir}/{case}-{str(dtype)[6:]}-{rank}.pt")
    return world


def _reference(case, dtype):
    """Single process: per-shard forward passes, InfoNCELoss on the global batch."""
    kwargs = {k: v for k, v in CASES[case].items()}
    model = _model(dtype).train()
    v1, v2 = _views(dtype)
    z = [model(torch.cat([ddp.shard(v1, r, WORLD), ddp.shard(v2, r, WORLD)]))[1].chunk(2)
         for r in range(WORLD)]
    z1, z2 = torch.cat([a for a, _ in z]), torch.cat([b for _, b in z])
    loss = InfoNCELoss(**kwargs)(z1, z2)
    loss.backward()
    return float(loss.detach()), {k: p.grad for k, p in model.named_parameters()}


@pytest.fixture(scope="module")
def ddp_steps(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp-steps")
    assert ddp.spawn(_grad_worker, WORLD, (str(out),), threads=1) == WORLD
    return {(case, dtype, r): torch.load(out / f"{case}-{str(dtype)[6:]}-{r}.pt",
                                         weights_only=True)
            for case in CASES for dtype in TOL for r in range(WORLD)}


def _max_grad_diff(grads, ref):
    assert grads.keys() == ref.keys()
    return max(float((grads[k] - ref[k]).abs().max()) for k in ref)


@pytest.mark.parametrize("dtype", list(TOL), ids=str)
@pytest.mark.parametrize("case", ["plain", "regularised"])
def test_ddp_step_equals_single_process_step_on_the_global_batch(ddp_steps, case, dtype):
    # measured: max |grad diff| 2.2e-6 plain, 1.6e-6 regularised in float32, 2e-15 / 4e-15
    # in float64 (|grad| <= 1.7); the GatherLayer: 0.20; an entropy term with nearest
    # neighbours searched in the shard only (not the gathered batch): 0.29
    tol = TOL[dtype]
    ref_loss, ref_grads = _reference(case, dtype)
    assert all(g.abs().max() > 1e-3 for g in ref_grads.values() if g.ndim > 1)  # not trivial
    for rank in range(WORLD):
        got = ddp_steps[case, dtype, rank]
        assert got["loss"] == pytest.approx(ref_loss, abs=tol)
        diff = _max_grad_diff(got["grads"], ref_grads)
        assert diff < tol, f"rank {rank}: max |grad - reference| = {diff:.2e}"
    # the shares differ between ranks (each its own anchors); their mean is the loss
    shares = [ddp_steps[case, dtype, r]["share"] for r in range(WORLD)]
    assert shares[0] != shares[1] and np.mean(shares) == pytest.approx(ref_loss, abs=tol)


@pytest.mark.parametrize("dtype", list(TOL), ids=str)
def test_gatherlayer_without_all_reduce_backward_fails_the_same_check(ddp_steps, dtype):
    ref_loss, ref_grads = _reference("gatherlayer", dtype)
    got = ddp_steps["gatherlayer", dtype, 0]
    assert got["loss"] == pytest.approx(ref_loss, abs=TOL[dtype])  # forward is right ...
    assert _max_grad_diff(got["grads"], ref_grads) > 0.01  # ... its gradients are not (0.2)


def test_gathered_loss_alone_is_infonce():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(2, 6, 5, generator=g, dtype=torch.float64)
    kwargs = CASES["regularised"]
    torch.testing.assert_close(ddp.GatheredInfoNCELoss(**kwargs)(z1, z2),
                               InfoNCELoss(**kwargs)(z1, z2), rtol=1e-12, atol=1e-12)


def test_knn_entropy_row_shares_average_to_the_full_estimate():
    h = torch.randn(12, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    shares = [knn_entropy(h, slice(4 * r, 4 * r + 4)) for r in range(3)]
    assert float(sum(shares) / 3) == pytest.approx(float(knn_entropy(h)), rel=1e-12)
    with pytest.raises(ValueError, match="contiguous"):
        knn_entropy(h, slice(0, 12, 2))


def test_shard_and_view_seeds():
    batch = torch.arange(8)
    assert [ddp.shard(batch, r, 2).tolist() for r in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError, match="equal shards"):
        ddp.shard(torch.arange(7), 0, 2)
    seeds = {ddp.view_seed(0, s, r) for s in range(50) for r in range(4)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)


def test_launched_reads_torchrun_environment(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert ddp.launched() is None and ddp.is_main_process()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert ddp.launched() == (3, 4, 1) and not ddp.is_main_process()
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4"):
        ddp.launched()


# ---------------------------------------------------------------- train_encoder, 2 ranks
def tiny_set(n=64, seed=0):
    """Two visually distinct classes (as in test_train): dark and bright noise images."""
    from gaussood.deep import ImageSet

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 60, size=(n, 32, 32, 3)).astype(np.uint8)
    images[labels == 1] += 150
    return ImageSet(images=images, labels=labels.astype(np.int64), name="tiny",
                    classes=["dark", "bright"], source=f"synthetic test images, n={n}")


# batch_size is the global batch: 16 images, 8 per rank
DDP_RUN = dict(model="small", epochs=2, batch_size=16, steps_per_epoch=2, resolution="16",
               knn_bank=32, knn_queries=16, knn_k=5, seed=3)


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values()
                      if p.is_floating_point()])


def test_train_encoder_on_2_processes_checkpoints_and_resumes_exactly(tmp_path):
    train, test, cfg = tiny_set(), tiny_set(32, seed=1), TrainConfig(**DDP_RUN)
    full = train_encoder(train, cfg, eval_set=test, checkpoint_dir=tmp_path / "a",
                         progress=False, nproc=2)
    assert full.total_steps == 4 and [h["epoch"] for h in full.history] == [1, 2]
    assert full.world_size == 2 and full.rank == 0
    assert full.history[-1]["views"] == 2 * 4 * 16  # 2 views x 4 steps x global batch 16
    assert all(np.isfinite(h["loss"]) and 0 <= h["knn_top1"] <= 1 for h in full.history)
    state = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and state["step"] == 4
    assert state["config"] == dataclasses.asdict(cfg)  # the config holds no process count
    torch.testing.assert_close(_weights(load_encoder(tmp_path / "a" / "last.pt")),
                               _weights(full.model))  # rank 0's model came back

    cut = train_encoder(train, cfg, checkpoint_dir=tmp_path / "b", progress=False,
                        stop_after_steps=1, nproc=2)              # step 1: mid-epoch 1
    assert cut.history == []
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert state["step"] == 1 and state["gen"] is None  # views are seeded per step and rank
    # should_stop is polled in this process; the ranks stop together after some step
    train_encoder(train, cfg, checkpoint_dir=tmp_path / "b", progress=False,
                  should_stop=lambda: True, nproc=2)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["step"] >= 2
    with pytest.raises(ValueError, match=r"run on 2 process\(es\); this run has 1"):
        train_encoder(train, cfg, checkpoint_dir=tmp_path / "b", progress=False)
    resumed = train_encoder(train, cfg, eval_set=test, checkpoint_dir=tmp_path / "b",
                            progress=False, nproc=2)
    torch.testing.assert_close(_weights(resumed.model), _weights(full.model), rtol=1e-5,
                               atol=1e-6)
    assert [h["loss"] for h in resumed.history] == pytest.approx(
        [h["loss"] for h in full.history], rel=1e-5)


def test_resume_with_another_number_of_processes_is_refused(tmp_path):
    """Checked before any rank starts: a single-process checkpoint (no world_size key)
    does not resume with 2 processes, nor a 2-process one with 1 or 4."""
    train, cfg = tiny_set(), TrainConfig(**{**DDP_RUN, "steps": 1})
    one, two = tmp_path / "one", tmp_path / "two"
    train_encoder(train, cfg, checkpoint_dir=one, progress=False)
    state = torch.load(one / "last.pt", weights_only=True)
    assert "world_size" not in state
    with pytest.raises(ValueError, match=r"run on 1 process\(es\); this run has 2\. "
                                         r"Resume with nproc=1"):
        train_encoder(train, cfg, checkpoint_dir=one, progress=False, nproc=2)
    two.mkdir()
    torch.save({**state, "world_size": 2}, two / "last.pt")  # as a 2-process run writes it
    for nproc in (1, 4):
        with pytest.raises(ValueError, match=rf"run on 2 process\(es\); this run has {nproc}"
                                             r"\. Resume with nproc=2"):
            train_encoder(train, cfg, checkpoint_dir=two, progress=False, nproc=nproc)


def test_nproc_configuration_errors_come_from_the_calling_process():
    with pytest.raises(ValueError, match=r"batch_size=16 is the global batch and must split "
                                         r"evenly across the 3 processes"):
        train_encoder(tiny_set(), TrainConfig(**DDP_RUN), progress=False, nproc=3)
    with pytest.raises(ValueError, match=r"batch_size=128 is larger than the 64"):
        train_encoder(tiny_set(), TrainConfig(**{**DDP_RUN, "batch_size": 128}),
                      progress=False, nproc=2)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="nproc must be an integer >= 1"):
            train_encoder(tiny_set(), TrainConfig(**DDP_RUN), progress=False, nproc=bad)
    assert "nproc" not in {f.name for f in dataclasses.fields(TrainConfig)}
    # the default learning rate is the single-process one: batch_size is the global batch
    assert TrainConfig(**DDP_RUN).learning_rate() == pytest.approx(0.06 * 16 / 128)


def test_torchrun_world_size_conflicts_with_an_explicit_nproc(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="nproc=4, but this process is one of 2 ranks"):
        train_encoder(tiny_set(), TrainConfig(**DDP_RUN), progress=False, nproc=4)


def test_global_batch_holds_the_single_process_images():
    """The ranks' shards of step k, concatenated in rank order, are the batch of step k
    of a single-process run with the same batch_size and seed."""
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(5))
    batch = perm[16:32]
    torch.testing.assert_close(torch.cat([ddp.shard(batch, r, 4) for r in range(4)]), batch)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="needs 2 CUDA GPUs")
def test_train_encoder_on_2_gpus(tmp_path):
    result = train_encoder(tiny_set(), TrainConfig(**DDP_RUN), device="cuda", progress=False,
                           nproc=2)
    assert np.isfinite(result.history[-1]["loss"])
