import math

import pytest

torch = pytest.importorskip("torch")

from gaussood.deep.loss import InfoNCELoss, norm_penalty  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def naive_nt_xent(z1, z2, t):
    """Algorithm 1 of SimCLR, literally: interleaved views z_{2k-1}, z_{2k}, double loops."""
    n = z1.shape[0]
    z = []
    for k in range(n):
        z += [z1[k].tolist(), z2[k].tolist()]
    z = [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in z]
    s = [[sum(a * b for a, b in zip(zi, zk)) for zk in z] for zi in z]

    def ell(i, j):
        den = sum(math.exp(s[i][k] / t) for k in range(2 * n) if k != i)
        return -math.log(math.exp(s[i][j] / t) / den)

    return sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


@pytest.mark.parametrize("n, d, t", [(2, 3, 0.5), (5, 8, 0.1), (8, 4, 1.0), (16, 32, 0.07), (7, 2, 3.0)])
def test_equals_naive_pseudocode(n, d, t):
    g = torch.Generator().manual_seed(n * 100 + d)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    got = InfoNCELoss(temperature=t)(z1, z2).item()
    assert got == pytest.approx(naive_nt_xent(z1, z2, t), abs=1e-6, rel=1e-9)


@pytest.mark.parametrize("t", [0.05, 0.5, 2.0])
@pytest.mark.parametrize("n, d", [(2, 2), (5, 7), (10, 10)])
def test_closed_form_orthogonal_samples(n, d, t):
    # z1 = z2 = one-hot rows: s(positive) = 1, s(other) = 0 for the 2N - 2 negatives,
    # so every anchor has l = -log(e^{1/t} / (e^{1/t} + 2N - 2)) = log(1 + (2N - 2) e^{-1/t}).
    z = torch.eye(n, d, dtype=torch.float64)
    expected = math.log1p((2 * n - 2) * math.exp(-1.0 / t))
    assert InfoNCELoss(t)(z, z.clone()).item() == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("t", [0.01, 0.5, 10.0])
@pytest.mark.parametrize("n", [2, 3, 64])
def test_identical_embeddings_give_log_2n_minus_1(n, t):
    z = torch.full((n, 5), 0.3, dtype=torch.float64)
    assert InfoNCELoss(t)(z, z).item() == pytest.approx(math.log(2 * n - 1), rel=1e-12)


def test_symmetric_in_the_two_views():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(2, 9, 6, generator=g, dtype=torch.float64)
    loss = InfoNCELoss(0.2)
    assert loss(z1, z2).item() == pytest.approx(loss(z2, z1).item(), rel=1e-13)


def test_invariant_to_positive_scaling_of_rows():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(2, 8, 5, generator=g, dtype=torch.float64)
    scale = torch.rand(8, 1, generator=g, dtype=torch.float64) * 10 + 0.1
    loss = InfoNCELoss(0.3)
    assert loss(scale * z1, 3.0 * z2).item() == pytest.approx(loss(z1, z2).item(), rel=1e-12)


def test_aligned_views_score_lower_than_random_views():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(2, 32, 16, generator=g)
    loss = InfoNCELoss(0.1)
    assert loss(z1, z1 + 0.01 * z2).item() < loss(z1, z2).item()


def test_gradient_flows_and_is_finite():
    g = torch.Generator().manual_seed(4)
    z1 = torch.randn(6, 4, generator=g, requires_grad=True)
    z2 = torch.randn(6, 4, generator=g, requires_grad=True)
    InfoNCELoss(0.5, norm_weight=0.1)(z1, z2).backward()
    for z in (z1, z2):
        assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(2, 4, 3, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(InfoNCELoss(0.4, norm_weight=0.2), (z1, z2))


def test_float32_agrees_with_float64():
    g = torch.Generator().manual_seed(6)
    z1, z2 = torch.randn(2, 50, 20, generator=g, dtype=torch.float64)
    loss = InfoNCELoss(0.1)
    lo = loss(z1.float(), z2.float()).item()
    assert lo == pytest.approx(loss(z1, z2).item(), abs=1e-5)


def test_norm_weight_adds_the_mean_squared_norm():
    g = torch.Generator().manual_seed(7)
    z1 = 2.0 * torch.randn(10, 4, generator=g, dtype=torch.float64)
    z2 = torch.randn(10, 4, generator=g, dtype=torch.float64)
    base = InfoNCELoss(0.5)(z1, z2).item()
    extra = 0.25 * ((z1**2).sum(1) + (z2**2).sum(1)).mean().item() / 2
    assert InfoNCELoss(0.5, norm_weight=0.25)(z1, z2).item() == pytest.approx(base + extra, rel=1e-12)
    # norm_penalty on a known matrix: rows of norm^2 1, 4 and 9 -> mean 14/3.
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]], dtype=torch.float64)
    assert norm_penalty(h).item() == pytest.approx(14 / 3)
    assert norm_penalty(h, 0.3).item() == pytest.approx(0.3 * 14 / 3)


@pytest.mark.parametrize("t", [0, -0.1, float("nan"), float("inf"), -float("inf")])
def test_bad_temperature_is_rejected(t):
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(t)


@pytest.mark.parametrize("t", ["0.5", None, True])
def test_non_numeric_temperature_is_a_type_error(t):
    with pytest.raises(TypeError, match="temperature"):
        InfoNCELoss(t)


@pytest.mark.parametrize("w", [-1.0, float("nan"), float("inf")])
def test_bad_norm_weight_is_rejected(w):
    with pytest.raises(ValueError, match="norm_weight"):
        InfoNCELoss(0.5, norm_weight=w)
    with pytest.raises(ValueError, match="weight"):
        norm_penalty(torch.ones(2, 2), w)


@pytest.mark.parametrize(
    "s1, s2, match",
    [((4,), (4,), "z1"), ((2, 3, 4), (2, 3, 4), "z1"), ((4, 3), (5, 3), "same shape"),
     ((4, 3), (4, 2), "same shape"), ((1, 3), (1, 3), "N >= 2"), ((4, 3), (4,), "z2")],
)
def test_bad_shapes_are_rejected(s1, s2, match):
    with pytest.raises(ValueError, match=match):
        InfoNCELoss()(torch.ones(s1), torch.ones(s2))
    with pytest.raises(ValueError, match="h must"):
        norm_penalty(torch.ones(3))


def test_repr_names_the_settings():
    assert "temperature=0.2" in repr(InfoNCELoss(0.2))


@needs_cuda
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(8)
    z1, z2 = torch.randn(2, 64, 32, generator=g)
    loss = InfoNCELoss(0.1, norm_weight=0.01)
    cpu = loss(z1, z2)
    z1c, z2c = z1.cuda().requires_grad_(), z2.cuda().requires_grad_()
    gpu = loss(z1c, z2c)
    gpu.backward()
    assert gpu.device.type == "cuda"
    assert gpu.item() == pytest.approx(cpu.item(), abs=1e-4)
    assert torch.isfinite(z1c.grad).all()


def test_knn_entropy_tracks_scale_and_enters_the_loss():
    from gaussood.deep.loss import InfoNCELoss, knn_entropy
    g = torch.Generator().manual_seed(0)
    h = torch.randn(256, 8, generator=g)
    # scaling by s adds D * log(s) to the estimate (exact for this estimator)
    assert torch.isclose(knn_entropy(3.0 * h) - knn_entropy(h), torch.tensor(8 * math.log(3.0)),
                         atol=1e-4)
    z1, z2 = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)
    plain = InfoNCELoss()(z1, z2)
    reg = InfoNCELoss(entropy_weight=0.1)(z1, z2)
    assert torch.isclose(reg, plain - 0.05 * (knn_entropy(z1) + knn_entropy(z2)), atol=1e-5)
    # the term measures the spread of each view, not the distance between the two views
    # of a sample: bringing the positives 10x closer leaves it (nearly) unchanged, where
    # an estimate on the pooled views would move by D * log(10) = 18.4
    noise = torch.randn(64, 8, generator=g)

    def entropy_part(z2):
        return (InfoNCELoss(entropy_weight=1.0)(z1, z2) - InfoNCELoss()(z1, z2)).item()
    assert abs(entropy_part(z1 + 0.01 * noise) - entropy_part(z1 + 0.001 * noise)) < 1.0
    with pytest.raises(ValueError):
        knn_entropy(torch.randn(1, 4))
