"""Package-level promises."""

import subprocess
import sys

import gaussood


def test_import_does_not_import_torch():
    code = "import sys, gaussood; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_public_api():
    for name in gaussood.__all__:
        assert hasattr(gaussood, name)
