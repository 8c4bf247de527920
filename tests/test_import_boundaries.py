"""The torch-free core stays torch-free: the service must never load torch."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    ["momentum", "momentum.data", "momentum.features", "momentum.benchmarks", "momentum.metrics"],
)
def test_core_does_not_import_torch(module):
    code = f"import sys, {module}; sys.exit(1 if 'torch' in sys.modules else 0)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"importing {module} pulled in torch\n{result.stderr}"
