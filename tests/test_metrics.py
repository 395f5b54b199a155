"""Tests for gaussood.metrics: hand-built examples with known answers."""
import json

import numpy as np
import pytest

from gaussood.metrics import (
    OODReport,
    aupr_in,
    aupr_out,
    auroc,
    fpr95_id_positive,
    fpr95_ood_positive,
    fpr_at_tpr,
    ood_report,
)

ALL_METRICS = [auroc, aupr_in, aupr_out, fpr95_id_positive, fpr95_ood_positive]


def _brute_auroc(s_in, s_out):
    d = np.asarray(s_in, float)[:, None] - np.asarray(s_out, float)[None, :]
    return ((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size


# ---------------------------------------------------------------- known answers
def test_perfect_separation():
    s_in, s_out = [2.0, 3.0, 4.0], [0.0, 1.0]
    assert auroc(s_in, s_out) == 1.0
    assert aupr_in(s_in, s_out) == 1.0
    assert aupr_out(s_in, s_out) == 1.0
    assert fpr95_id_positive(s_in, s_out) == 0.0
    assert fpr95_ood_positive(s_in, s_out) == 0.0


def test_reversed():
    s_in, s_out = [0.0, 1.0], [2.0, 3.0, 4.0]
    assert auroc(s_in, s_out) == 0.0
    # keeping 95% of ID needs threshold 0 -> every OOD accepted; likewise for OOD+.
    assert fpr95_id_positive(s_in, s_out) == 1.0
    assert fpr95_ood_positive(s_in, s_out) == 1.0


def test_auroc_one_tie_half_credit():
    # ID [3,2,1] vs OOD [2,0]: 6 pairs.
    # (3,2) win, (3,0) win, (2,2) TIE, (2,0) win, (1,2) loss, (1,0) win
    # -> (4 + 0.5) / 6 = 0.75
    assert auroc([3, 2, 1], [2, 0]) == 4.5 / 6


def test_auroc_all_tied_is_half():
    assert auroc([1.0] * 3, [1.0] * 5) == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    # rounding creates many ties
    s_in = np.round(rng.normal(0.5, 1.0, 200), 1)
    s_out = np.round(rng.normal(0.0, 1.0, 150), 1)
    assert abs(auroc(s_in, s_out) - _brute_auroc(s_in, s_out)) < 1e-12


def test_aupr_hand_computed():
    # Sorted by score: 4(I) 3(I) 2(O) 1(I) 0(O)
    # AUPR-In = sum_k (R_k - R_{k-1}) P_k over ID hits:
    #   at 4: R=1/3 P=1; at 3: R=2/3 P=1; at 1: R=1 P=3/4 -> 1/3 + 1/3 + 1/4 = 11/12
    # AUPR-Out (OOD positive, score -s, order 0(O) 1(I) 2(O) 3(I) 4(I)):
    #   at 0: R=1/2 P=1; at 2: R=1 P=2/3 -> 1/2 + 1/3 = 5/6
    s_in, s_out = [4, 3, 1], [2, 0]
    assert aupr_in(s_in, s_out) == pytest.approx(11 / 12, abs=1e-15)
    assert aupr_out(s_in, s_out) == pytest.approx(5 / 6, abs=1e-15)


def test_aupr_with_tie_block_no_interpolation():
    # ID [2,1], OOD [1,0]: threshold 2 -> P=1, R=1/2; threshold 1 (tied block) -> P=2/3, R=1
    # AP_in = 1/2*1 + 1/2*2/3 = 5/6
    assert aupr_in([2, 1], [1, 0]) == pytest.approx(5 / 6, abs=1e-15)


def test_aupr_out_is_aupr_in_with_roles_swapped():
    rng = np.random.default_rng(3)
    a, b = rng.normal(1, 1, 50), rng.normal(0, 1, 70)
    assert aupr_out(a, b) == aupr_in(-b, -a)


def test_fpr95_conventions_differ_on_asymmetric_example():
    s_in = np.arange(10, 30, dtype=float)  # 20 ID scores: 10, 11, ..., 29
    s_out = np.array([0.0] * 18 + [12.0, 25.0])  # 20 OOD scores
    # ID+: keep >= 95% of ID = 19/20 -> threshold 11 (ID 11..29 kept).
    #      OOD with score >= 11: {12, 25} -> 2/20 = 0.10
    assert fpr95_id_positive(s_in, s_out) == 0.10
    # OOD+: catch >= 95% of OOD = 19/20 (score <= t) -> t = 12 (18 zeros + 12).
    #       ID with score <= 12: {10, 11, 12} -> 3/20 = 0.15
    assert fpr95_ood_positive(s_in, s_out) == 0.15
    assert fpr_at_tpr(s_in, s_out, 0.95, positive="id") == 0.10
    assert fpr_at_tpr(s_in, s_out, 0.95, positive="ood") == 0.15


def test_fpr_tied_block_moves_together():
    # ID [2,1,1,1], OOD [1,0,0,0]. ROC (ID+): threshold 2 -> TPR 1/4, FPR 0;
    # threshold 1 (a block with 3 ID + 1 OOD) -> TPR 1, FPR 1/4.
    # Any tpr in (1/4, 1] lands on the block: FPR 1/4, no interpolation.
    s_in, s_out = [2, 1, 1, 1], [1, 0, 0, 0]
    for t in (0.3, 0.5, 0.95, 1.0):
        assert fpr_at_tpr(s_in, s_out, tpr=t) == 0.25
    assert fpr_at_tpr(s_in, s_out, tpr=0.25) == 0.0
    # Everything tied: the only ROC points are (0,0) and (1,1).
    assert fpr95_id_positive([1.0] * 4, [1.0] * 4) == 1.0
    assert fpr95_ood_positive([1.0] * 4, [1.0] * 4) == 1.0


def test_fpr_at_tpr_small_targets():
    # ID [1,2,3,4], OOD [0,2.5]; tpr 0.75 -> threshold 2 -> OOD >= 2: {2.5} -> 1/2
    assert fpr_at_tpr([1, 2, 3, 4], [0, 2.5], tpr=0.75) == 0.5
    # OOD+: tpr 0.5 -> catch OOD 0 first (score <= 0) -> no ID flagged
    assert fpr_at_tpr([1, 2, 3, 4], [0, 2.5], tpr=0.5, positive="ood") == 0.0
    # OOD+: tpr 1.0 -> must catch 2.5 -> ID <= 2.5: {1, 2} -> 1/2
    assert fpr_at_tpr([1, 2, 3, 4], [0, 2.5], tpr=1.0, positive="ood") == 0.5


# ---------------------------------------------------------------- invariances
def _all(s_in, s_out):
    return [f(s_in, s_out) for f in ALL_METRICS]


@pytest.mark.parametrize(
    "transform",
    [np.exp, lambda x: x**3, lambda x: 7.0 * x - 3.0, np.arctan, lambda x: x + 1e4],
)
def test_invariant_under_strictly_increasing_transform(transform):
    rng = np.random.default_rng(4)
    s_in = np.round(rng.normal(0.7, 1.0, 300), 2)
    s_out = np.round(rng.normal(0.0, 1.0, 250), 2)
    assert _all(s_in, s_out) == _all(transform(s_in), transform(s_out))


def test_huge_scores_no_sigmoid_saturation():
    base_in, base_out = np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0])
    # Pairs (1,0)w (1,2)l (2,0)w (2,2)t (3,0)w (3,2)w -> (4 + 0.5) / 6 = 0.75. A sigmoid
    # of the scores (expit(1e4 + k) == 1.0) would tie everything at 0.5; ranks on float64
    # stay exact at any offset or scale that keeps the scores distinct.
    for s_in, s_out in ((1e4 + base_in, 1e4 + base_out), (1e15 + base_in, 1e15 + base_out),
                        (-1e15 + base_in, -1e15 + base_out), (1e300 * base_in, 1e300 * base_out),
                        (1e-300 * base_in, 1e-300 * base_out)):
        assert auroc(s_in, s_out) == 0.75
        assert _all(s_in, s_out) == _all(base_in, base_out)


def test_float32_equals_float64():
    rng = np.random.default_rng(5)
    s_in32 = rng.normal(0.5, 1.0, 400).astype(np.float32)
    s_out32 = rng.normal(0.0, 1.0, 300).astype(np.float32)
    assert _all(s_in32, s_out32) == _all(s_in32.astype(np.float64), s_out32.astype(np.float64))


def test_accepts_lists_ints_and_column_vectors():
    s_in, s_out = [3, 2, 1], [2, 0]
    col_in = np.array(s_in, dtype=float).reshape(-1, 1)
    col_out = np.array(s_out, dtype=float).reshape(-1, 1)
    assert _all(col_in, col_out) == _all(s_in, s_out)
    for v in _all(s_in, s_out):
        assert type(v) is float


# ---------------------------------------------------------------- validation
BAD_INPUTS = [
    (np.zeros((2, 3)), ValueError, r"\(2, 3\)"),
    (np.zeros((2, 2, 1)), ValueError, r"\(2, 2, 1\)"),
    (np.float64(1.0), ValueError, r"shape \(\)"),
    ([[1.0, 2.0], [3.0]], ValueError, ""),
    (["a", "b"], TypeError, "dtype"),
    (np.array(["1.0", "2.0"]), TypeError, "dtype"),
    (np.array([1.0, "x"], dtype=object), TypeError, ""),
    (np.array([object(), object()], dtype=object), TypeError, ""),
    (np.array([1 + 2j, 3 + 0j]), TypeError, "dtype"),
    ([1.0, np.nan], ValueError, "NaN or infinite"),
    ([1.0, np.inf], ValueError, "NaN or infinite"),
    ([-np.inf, 1.0], ValueError, "NaN or infinite"),
    ([], ValueError, "both ID .* and OOD .* scores are needed"),
    (np.zeros((0, 1)), ValueError, "both ID .* and OOD .* scores are needed"),
]


@pytest.mark.parametrize("func", ALL_METRICS + [fpr_at_tpr])
@pytest.mark.parametrize("bad,exc,msg", BAD_INPUTS)
@pytest.mark.parametrize("which", ["scores_in", "scores_out"])
def test_bad_input_raises_and_names_argument(func, bad, exc, msg, which):
    good = [0.0, 1.0, 2.0]
    args = (bad, good) if which == "scores_in" else (good, bad)
    with pytest.raises(exc, match=which) as info:
        func(*args)
    assert info.match(msg)


def test_object_array_of_numbers_is_accepted():
    s_in = np.array([3, 2.0, 1], dtype=object)
    assert auroc(s_in, [2, 0]) == 0.75


@pytest.mark.parametrize("tpr", [0.0, -0.1, 1.5, float("nan")])
def test_invalid_tpr(tpr):
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr([1, 2], [0, 1], tpr=tpr)


def test_invalid_positive():
    with pytest.raises(ValueError, match="positive"):
        fpr_at_tpr([1, 2], [0, 1], positive="in")


def test_ood_report_bad_set_is_named():
    with pytest.raises(ValueError, match=r"scores_out\['bad'\]"):
        ood_report([1, 2], {"ok": [0, 1], "bad": [np.nan]})
    with pytest.raises(ValueError, match="empty"):
        ood_report([1, 2], {})


# ---------------------------------------------------------------- report
def test_ood_report_mapping():
    s_in = [2, 3, 4]
    rep = ood_report(s_in, {"svhn": [0, 1], "lsun": [1, 3]})
    assert isinstance(rep, OODReport) and isinstance(rep, dict)
    assert list(rep) == ["svhn", "lsun"]
    assert rep["svhn"] == {
        "auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0,
        "fpr95_id_positive": 0.0, "fpr95_ood_positive": 0.0, "n_in": 3, "n_out": 2,
    }
    # lsun: (2,1)w (2,3)l (3,1)w (3,3)t (4,1)w (4,3)w -> 4.5/6 = 0.75
    assert rep["lsun"]["auroc"] == 0.75
    for row in rep.values():
        for k in ("auroc", "aupr_in", "aupr_out", "fpr95_id_positive", "fpr95_ood_positive"):
            assert type(row[k]) is float and 0.0 <= row[k] <= 1.0

    md = rep.to_markdown()
    lines = md.splitlines()
    assert "FPR@95TPR (ID+)" in lines[0] and "FPR@95TPR (OOD+)" in lines[0]
    table_rows = [ln for ln in lines[2:] if ln.startswith("| ")]
    assert len(table_rows) == 2
    assert table_rows[0].startswith("| svhn | 100.00 | 100.00 | 100.00 | 0.00 | 0.00 |")
    assert table_rows[1].startswith("| lsun | 75.00 |")
    assert "ID+" in lines[-1] and "OOD+" in lines[-1]  # footnote
    assert str(rep) == md
    assert "0.7500" in rep.to_markdown(percent=False)


def test_ood_report_single_array_and_json_roundtrip():
    rep = ood_report([3, 2, 1], np.array([2.0, 0.0]), name="cifar100")
    assert list(rep) == ["cifar100"]
    assert rep["cifar100"]["auroc"] == 0.75
    d = rep.to_dict()
    assert type(d) is dict and type(d["cifar100"]) is dict
    assert json.loads(json.dumps(d)) == d
    assert d == dict(rep)
