#!/usr/bin/env bash
# Installs the signal service into a new virtual environment: the project with one serve
# extra and nothing else (no torch, no training extras). The Dockerfile's builder stage runs
# this script, and so does the install test (tests/deploy), so both take the same steps.
#
# Usage: deploy/install-serve.sh EXTRA VENV
#   EXTRA  serve-cpu  plain onnxruntime (the default CPU image)
#          serve      onnxruntime-gpu on Linux x86_64 and Windows, onnxruntime elsewhere
#   VENV   directory of the new virtual environment; must not exist yet
# Environment:
#   PYTHON  interpreter that creates the environment (default python3; >= 3.11)
#   SOURCE  project directory to install (default: the checkout holding this script)
# pip's own variables apply (PIP_INDEX_URL, PIP_CONSTRAINT for pinned versions, ...).
set -euo pipefail

die() {
    echo "install-serve.sh: $*" >&2
    exit 1
}

if [ "$#" -ne 2 ]; then
    echo "usage: $0 serve-cpu|serve VENV" >&2
    exit 2
fi
extra=$1
venv=$2
case "$extra" in
    serve | serve-cpu) ;;
    *) die "EXTRA must be serve-cpu or serve, got '$extra'" ;;
esac
source_dir=${SOURCE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
[ -f "$source_dir/pyproject.toml" ] || die "no pyproject.toml in SOURCE=$source_dir"
[ -e "$venv" ] && die "VENV $venv exists already; give a new directory"

echo "== install-serve: [$extra] from $source_dir into $venv" >&2
"${PYTHON:-python3}" -m venv "$venv"
py="$venv/bin/python"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "Python >= 3.11 required, $("$py" --version) found (set PYTHON)"

# A regular (non-editable) install: the environment must work once the source is gone, as in
# the image's runtime stage, which copies only the environment. --no-cache-dir keeps pip's
# cache out of the image layer.
"$py" -m pip install --no-cache-dir --disable-pip-version-check "$source_dir[$extra]"
"$py" -m pip check --disable-pip-version-check

# The contract of the serve image, checked where it is built:
"$py" - "$extra" <<'PY'
import importlib.metadata as md
import importlib.util
import sys

extra = sys.argv[1]
installed = set()
for name in ("onnxruntime", "onnxruntime-gpu"):
    try:
        md.distribution(name)
    except md.PackageNotFoundError:
        continue
    installed.add(name)
# onnxruntime and onnxruntime-gpu share one module directory: exactly one may be installed
if len(installed) != 1:
    sys.exit(f"expected exactly one of onnxruntime / onnxruntime-gpu, found {sorted(installed)}")
if extra == "serve-cpu" and installed != {"onnxruntime"}:
    sys.exit(f"serve-cpu must install plain onnxruntime, found {sorted(installed)}")
# the service never imports torch (docs/architecture.md), so the image must not carry its gigabytes
if importlib.util.find_spec("torch") is not None:
    sys.exit("torch is importable in the serve environment; it must not be installed")
import onnxruntime  # noqa: E402  (after the checks: a failure above says more)

import service.healthcheck  # noqa: E402,F401

print(f"== install-serve: {sorted(installed)[0]} {onnxruntime.__version__}, "
      f"providers {onnxruntime.get_available_providers()}", file=sys.stderr)
PY
"$venv/bin/momentum-serve" --help >/dev/null
echo "== install-serve: done" >&2
