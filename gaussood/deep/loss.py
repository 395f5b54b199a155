"""The InfoNCE (NT-Xent) loss of SimCLR, with the norm part of the Gaussian regulariser."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check_weight(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return float(value)


def norm_penalty(h: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """Norm part of the Gaussianity regulariser: ``weight * mean_i ||h_i||^2``.

    Betser, Gofer, Levi & Gilboa, "InfoNCE Induces Gaussian Distribution"
    (ICLR 2026) regularise the unnormalised embeddings h with

        beta * (lambda * E ||h||^2 - H(h)),

    whose minimiser under a norm budget is an isotropic Gaussian. This is the
    norm term ``lambda * E ||h||^2``; the entropy term is ``knn_entropy`` (a
    batch nearest-neighbour estimate), combined in ``InfoNCELoss``.
    https://arxiv.org/abs/2602.24012

    Parameters
    ----------
    h : Tensor (N, D)
        Embeddings before L2 normalisation.
    weight : float, default=1.0
        lambda, finite and >= 0.

    Returns
    -------
    Tensor, shape ()
    """
    weight = _check_weight("weight", weight)
    if h.ndim != 2:
        raise ValueError(f"h must have shape (N, D), got {tuple(h.shape)}")
    return weight * h.pow(2).sum(dim=1).mean()


def knn_entropy(h: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimate of the batch, up to an additive constant.

    H(h) ~ (D / N) * sum_i log rho_i + const, with rho_i the distance from h_i to its
    nearest other row (k = 1). Differentiable; O(N^2 D) per call. Used with a
    negative sign as the entropy part of the paper's regulariser.

    With ``rows`` (a slice ``start:stop`` of h's rows), the mean runs over those rows
    only, their nearest neighbours still searched among all N rows: one rank's share
    of the estimate on a batch gathered from every rank (the shares of equal-sized
    slices average to the full estimate).
    """
    if h.ndim != 2 or h.shape[0] < 2:
        raise ValueError(f"h must have shape (N, D) with N >= 2, got {tuple(h.shape)}")
    if rows is not None:
        start, stop, step = rows.indices(h.shape[0])
        if step != 1 or stop <= start:
            raise ValueError(f"rows must be a non-empty contiguous slice of the {h.shape[0]} "
                             f"rows, got {rows!r}")
        dist = torch.cdist(h[start:stop], h)
        own = torch.zeros_like(dist, dtype=torch.bool)
        own[:, start:stop] = torch.eye(stop - start, dtype=torch.bool, device=h.device)
        dist = dist.masked_fill(own, float("inf"))
        return h.shape[1] * torch.log(dist.min(dim=1).values.clamp_min(1e-12)).mean()
    dist = torch.cdist(h, h)
    dist = dist + torch.diag(torch.full((h.shape[0],), float("inf"), device=h.device,
                                        dtype=dist.dtype))
    return h.shape[1] * torch.log(dist.min(dim=1).values.clamp_min(1e-12)).mean()


class InfoNCELoss(torch.nn.Module):
    """NT-Xent, the normalised temperature-scaled cross-entropy loss of SimCLR.

    Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive
    Learning of Visual Representations" (ICML 2020). The 2N embeddings
    z = [z1; z2] are L2-normalised, s_ik = z_i . z_k, and for anchor i with
    positive p(i) = i + N (mod 2N)

        l_i = -log( exp(s_{i,p(i)} / t) / sum_{k != i} exp(s_ik / t) ),
        loss = mean_i l_i  over the 2N anchors,

    plus ``norm_weight * mean(||z1||^2 + ||z2||^2) / 2`` on the unnormalised inputs
    (see ``norm_penalty``) minus ``entropy_weight * (knn_entropy(z1) + knn_entropy(z2)) / 2``
    (each view alone: pooled, each row's nearest neighbour would be its own other
    view, and the estimate would reward pulling positive pairs apart): with
    both weights > 0 this is the paper's regulariser beta (lambda E||h||^2 - H(h))
    with beta = entropy_weight, lambda = norm_weight / entropy_weight.
    https://arxiv.org/abs/2002.05709

    Parameters
    ----------
    temperature : float, default=0.5
        t > 0, finite.
    norm_weight : float, default=0.0
        Weight of the norm penalty, finite and >= 0.
    entropy_weight : float, default=0.0
        Weight of the (subtracted) batch entropy estimate, finite and >= 0.

    Notes
    -----
    Shapes: ``forward(z1, z2)`` takes two (N, D) tensors, row i of each the two
    views of sample i, with N >= 2; it returns a scalar. The loss is at least
    0 and, when all embeddings coincide, equals log(2N - 1) for every t.

    Examples
    --------
    >>> import math, torch
    >>> z = torch.ones(4, 8)
    >>> loss = InfoNCELoss(temperature=0.1)
    >>> round(loss(z, z).item(), 4) == round(math.log(7), 4)
    True
    """

    def __init__(self, temperature: float = 0.5, norm_weight: float = 0.0,
                 entropy_weight: float = 0.0) -> None:
        super().__init__()
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise TypeError(f"temperature must be a real number, got {type(temperature).__name__}")
        if not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.norm_weight = _check_weight("norm_weight", norm_weight)
        self.entropy_weight = _check_weight("entropy_weight", entropy_weight)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, norm_weight={self.norm_weight}, "
                f"entropy_weight={self.entropy_weight}")

    @staticmethod
    def _check_pair(z1: torch.Tensor, z2: torch.Tensor, min_rows: int = 2) -> int:
        for name, z in (("z1", z1), ("z2", z2)):
            if not isinstance(z, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
            if z.ndim != 2:
                raise ValueError(f"{name} must have shape (N, D), got {tuple(z.shape)}")
        if z1.shape != z2.shape:
            raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} "
                             f"and {tuple(z2.shape)}")
        n = z1.shape[0]
        if n < min_rows:
            raise ValueError(f"need N >= {min_rows} pairs (negatives come from the batch), "
                             f"got N={n}")
        return n

    def forward(self, z1: torch.Tensor, z2: torch.Tensor,
                negatives: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of the positive pairs (z1[i], z2[i]); z1, z2 of shape (N, D) -> scalar.

        ``negatives`` (M, D), optional: extra rows that enter every anchor's denominator
        and are anchors of nothing (e.g. other rotations of some images, CSI's shifted
        instances); the norm and entropy terms ignore them."""
        n = self._check_pair(z1, z2)
        z = torch.cat([z1, z2], dim=0)
        zn = F.normalize(z, dim=1)
        keys = zn
        if negatives is not None:
            if (not isinstance(negatives, torch.Tensor) or negatives.ndim != 2
                    or negatives.shape[1] != z1.shape[1]):
                raise ValueError(f"negatives must be a tensor of shape (M, {z1.shape[1]}), got "
                                 f"{tuple(getattr(negatives, 'shape', ()))}")
            keys = torch.cat([zn, F.normalize(negatives, dim=1)])
        logits = zn @ keys.T / self.temperature
        self_mask = torch.eye(2 * n, keys.shape[0], dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))
        idx = torch.arange(n, device=z.device)
        target = torch.cat([idx + n, idx])
        return self._regularised(F.cross_entropy(logits, target), z1, z2)

    def _regularised(self, loss, z1, z2):
        """``loss`` plus the norm term, minus the entropy term (when their weights are > 0)."""
        if self.norm_weight > 0:
            loss = loss + norm_penalty(torch.cat([z1, z2]), self.norm_weight)
        if self.entropy_weight > 0:
            # per view: in [z1; z2] each row's nearest neighbour is its own other view,
            # and the estimate would measure (and reward) pair distances, not spread
            loss = loss - self.entropy_weight * 0.5 * (knn_entropy(z1) + knn_entropy(z2))
        return loss


class SupConLoss(InfoNCELoss):
    """Supervised contrastive loss (SupCon, the "L_out" form): InfoNCE whose positives
    are every other view of the same class.

    Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu & Krishnan, "Supervised
    Contrastive Learning" (NeurIPS 2020). With z = [z1; z2] L2-normalised (2N rows),
    s_ik = z_i . z_k and P(i) = {p != i : y_p = y_i} (the other view of i is always in it),

        l_i = -1/|P(i)| sum_{p in P(i)} log( exp(s_ip / t) / sum_{k != i} exp(s_ik / t) ),
        loss = mean_i l_i  over the 2N anchors,

    plus the same norm and entropy terms as ``InfoNCELoss``. With all labels distinct
    it is exactly ``InfoNCELoss``. ``weight`` w in [0, 1] mixes in the instance term:
    ``w * SupCon + (1 - w) * InfoNCE`` on the same logits (w = 1, the default: SupCon
    alone; w = 0: InfoNCE); the instance term keeps the views of one class apart. The
    encoder stays a contrastive one (an L2-normalised projection trained with a softmax
    over the batch); the labels only decide which pairs attract.
    https://arxiv.org/abs/2004.11362

    Examples
    --------
    >>> import torch
    >>> z1, z2 = torch.randn(6, 8), torch.randn(6, 8)
    >>> distinct = SupConLoss(0.2)(z1, z2, torch.arange(6))
    >>> bool(torch.isclose(distinct, InfoNCELoss(0.2)(z1, z2)))
    True
    """

    def __init__(self, temperature: float = 0.5, norm_weight: float = 0.0,
                 entropy_weight: float = 0.0, weight: float = 1.0) -> None:
        super().__init__(temperature, norm_weight, entropy_weight)
        weight = _check_weight("weight", weight)
        if weight > 1:
            raise ValueError(f"weight must be in [0, 1], got {weight!r}")
        self.weight = weight

    def extra_repr(self) -> str:
        return super().extra_repr() + f", weight={self.weight}"

    def forward(self, z1: torch.Tensor, z2: torch.Tensor,  # type: ignore[override]
                labels: torch.Tensor) -> torch.Tensor:
        """Loss of (z1, z2), both (N, D), with class labels (N,) of the N samples -> scalar."""
        n = self._check_pair(z1, z2)
        if (not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.shape[0] != n
                or labels.dtype.is_floating_point or labels.dtype == torch.bool):
            raise ValueError(f"labels must be an integer tensor of shape ({n},), got "
                             f"{getattr(labels, 'dtype', type(labels).__name__)} "
                             f"{tuple(getattr(labels, 'shape', ()))}")
        z = torch.cat([z1, z2], dim=0)
        zn = F.normalize(z, dim=1)
        y = labels.to(z.device).repeat(2)
        logits = zn @ zn.T / self.temperature
        self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
        log_prob = torch.log_softmax(logits.masked_fill(self_mask, float("-inf")), dim=1)
        positive = (y[:, None] == y[None, :]) & ~self_mask
        loss = -(log_prob.masked_fill(~positive, 0.0).sum(dim=1) / positive.sum(dim=1)).mean()
        if self.weight < 1:
            idx = torch.arange(2 * n, device=z.device)
            instance = -log_prob[idx, (idx + n) % (2 * n)].mean()
            loss = self.weight * loss + (1 - self.weight) * instance
        return self._regularised(loss, z1, z2)
