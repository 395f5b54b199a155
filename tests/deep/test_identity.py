"""Encoder identity covers code, not only weights (issue 21): TorchScript files with the
same weights and other code, import-spec factories returning partials with other
arguments; and a scorer read back with ``gaussood.load`` checks it in
``OODFilter.from_fitted``."""

import textwrap
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import gaussood  # noqa: E402
from gaussood import GaussianScorer, OODFilter  # noqa: E402
from gaussood.deep import make_encoder  # noqa: E402

SMALL = {"input_size": 8, "resize": "resize", "mean": [0.5] * 3, "std": [0.25] * 3}


class Scaled(nn.Module):
    def __init__(self, factor: float = 2.0):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.factor = factor

    def forward(self, x):
        return self.lin(x.mean(dim=(2, 3))) * self.factor


class Shifted(Scaled):
    def forward(self, x):
        return self.lin(x.mean(dim=(2, 3))) + self.factor


def scripted(tmp_path, name, module):
    torch.manual_seed(0)
    state = Scaled().state_dict()
    module.load_state_dict(state)
    path = tmp_path / f"{name}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)      # torch.jit is deprecated
        torch.jit.save(torch.jit.script(module), str(path))
    return make_encoder(path, preprocessing=SMALL)


def test_torchscript_files_with_the_same_weights_and_other_code_differ(tmp_path):
    scaled, shifted = scripted(tmp_path, "a", Scaled()), scripted(tmp_path, "b", Shifted())
    seven = scripted(tmp_path, "c", Scaled(7.0))               # other attribute value
    again = scripted(tmp_path, "d", Scaled())
    ids = [e.identity() for e in (scaled, shifted, seven, again)]
    assert len({i["weights_sha256"] for i in ids}) == 1         # what main compared
    assert ids[0]["code_sha256"] != ids[1]["code_sha256"]
    assert ids[0]["code_sha256"] != ids[2]["code_sha256"]
    assert ids[0] == ids[3]                                     # the same model saved again
    assert ids[0] == make_encoder(tmp_path / "a.pt", preprocessing=SMALL).identity()


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "partial_factories.py").write_text(textwrap.dedent("""
        import functools
        import numpy as np

        def features(batch, factor):
            return np.asarray(batch, dtype=np.float32).mean(axis=(1, 2)) * factor

        def one():
            return functools.partial(features, factor=1.0)

        def seven():
            return functools.partial(features, factor=7.0)

        class Factor:                       # no repr of its own: an address
            def __init__(self, value):
                self.value = value

            def __rmul__(self, other):
                return other * self.value

        def opaque():
            return functools.partial(features, factor=Factor(1.0))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "partial_factories"


def test_import_spec_partials_with_other_arguments_differ(factories):
    one, seven = (make_encoder(f"{factories}:{name}") for name in ("one", "seven"))
    assert one.identity()["callable"] == seven.identity()["callable"] == \
        f"{factories}.features"
    assert one.identity() != seven.identity()
    assert one.identity() == make_encoder(f"{factories}:one").identity()
    opaque = make_encoder(f"{factories}:opaque").identity()
    assert opaque["code_sha256"] is None and "no stable text" in opaque["unverifiable"]


def test_loaded_scorer_checks_the_encoder_in_from_fitted(tmp_path, factories):
    """fit through OODFilter, save, gaussood.load, from_fitted with another encoder:
    refused; with the same one: accepted silently; unverifiable code: a warning."""
    images = np.random.default_rng(0).integers(0, 256, (300, 8, 8, 3), dtype=np.uint8)
    for name, other, expect in (("one", "seven", "code_sha256"),
                                ("opaque", "one", "code_sha256")):
        filt = OODFilter(GaussianScorer(), encoder=f"{factories}:{name}",
                         progress=False).fit(images)
        filt.scorer_.save(tmp_path / f"{name}.npz")
        loaded = gaussood.load(tmp_path / f"{name}.npz")
        with pytest.raises(ValueError, match=f"another encoder.*{expect}"):
            OODFilter.from_fitted(loaded, encoder=f"{factories}:{other}", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OODFilter.from_fitted(gaussood.load(tmp_path / "one.npz"), encoder=f"{factories}:one",
                              progress=False)
    with pytest.warns(UserWarning, match="no stable hash"):
        OODFilter.from_fitted(gaussood.load(tmp_path / "opaque.npz"),
                              encoder=f"{factories}:opaque", progress=False)


def test_callable_holding_tensors_hashes_their_values():
    """A callable object's tensors (bfloat16 too) count, by value."""
    import functools

    def project(batch, weight):
        return batch.flatten(1) @ weight.float()

    ids = [make_encoder(functools.partial(project, weight=w), preprocessing=SMALL).identity()
           for w in (torch.ones(192, 2, dtype=torch.bfloat16),
                     torch.ones(192, 2, dtype=torch.bfloat16),
                     2 * torch.ones(192, 2, dtype=torch.bfloat16))]
    assert ids[0] == ids[1] != ids[2] and ids[0]["code_sha256"] is not None


def test_eager_modules_with_the_same_weights_and_other_code_or_settings_differ():
    torch.manual_seed(0)
    a, b, c = Scaled(), Shifted(), Scaled(7.0)
    b.load_state_dict(a.state_dict())
    c.load_state_dict(a.state_dict())
    conv = [nn.Sequential(nn.Conv2d(3, 4, 3, stride=s), nn.Flatten()) for s in (1, 2)]
    conv[1].load_state_dict(conv[0].state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)     # no preprocessing: ImageNet's
        ids = [make_encoder(m, layer="output").identity() for m in (a, b, c, *conv)]
    assert ids[0]["weights_sha256"] == ids[1]["weights_sha256"] == ids[2]["weights_sha256"]
    assert len({i["code_sha256"] for i in ids}) == 5
    assert ids[3]["weights_sha256"] == ids[4]["weights_sha256"]
    torch.manual_seed(0)
    again = Scaled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert make_encoder(again, layer="output").identity() == ids[0]
        # a bound method of a module: the module's code counts too
        fa, fb = (make_encoder(m.forward, preprocessing=SMALL).identity() for m in (a, b))
    assert fa["weights_sha256"] == fb["weights_sha256"] and fa != fb
