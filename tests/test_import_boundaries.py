"""The torch-free core stays torch-free: the service must never load torch (or training)."""

import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "training")


def _modules(package: str) -> list[str]:
    found = [package]
    for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
        found.append(info.name)
    return sorted(found)


def _imports_forbidden(modules: list[str]) -> bool:
    code = (
        f"import sys, {', '.join(modules)}; "
        f"sys.exit(1 if any(m in sys.modules for m in {FORBIDDEN!r}) else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 1


def test_core_and_service_do_not_import_torch():
    modules = _modules("momentum") + _modules("service")
    assert "service.cycle" in modules and "momentum.registry" in modules
    if _imports_forbidden(modules):  # find the culprits only when something is wrong
        culprits = [m for m in modules if _imports_forbidden([m])]
        raise AssertionError(f"these modules pull in {FORBIDDEN}: {culprits}")
