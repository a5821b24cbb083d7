#!/usr/bin/env bash
# Prepare, on this (CPU) machine, what a device call needs that the GPU image lacks, in the git-ignored
# folder _device/ (the device tool's `run` takes it along with `carry: ["_device"]`):
#   _device/whl/        pure-Python wheels the image does not hold (datasets, dill, multiprocess)
#                       and transformers at this project's pin (the image has 5.17)
#   _device/dev-bench/  a copy of the dev-bench (../shared does not travel)
# Usage: bash scripts/gpu_kit.sh [DEV_BENCH_DIR]      (then: scripts/gpu_session.sh on the device)
# DEV_BENCH_DIR defaults to $P3B_DEVBENCH, else ../shared/dev-bench next to this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:-${P3B_DEVBENCH:-../shared/dev-bench}}
default_py=python3
[ -x .venv/bin/python ] && default_py=.venv/bin/python
py=${PYTHON:-$default_py}

# the pins of pyproject.toml, and the versions of datasets' helpers that this environment resolved
mapfile -t reqs < <("$py" - <<'PY'
import tomllib
from importlib.metadata import version
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(*[d for d in deps if d.split("==")[0] in ("transformers", "datasets")], sep="\n")
print(*[f"{n}=={version(n)}" for n in ("dill", "multiprocess")], sep="\n")
PY
)
[ ${#reqs[@]} -eq 5 ] || { echo "gpu_kit: could not read the pins from pyproject.toml and the installed dill/multiprocess versions with $py (got: ${reqs[*]}); run make install first or set PYTHON" >&2; exit 2; }
rm -rf _device/whl && mkdir -p _device/whl
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d _device/whl "${reqs[@]}"

if [ -d "$bench" ]; then
  rm -rf _device/dev-bench && cp -r "$bench" _device/dev-bench
else
  echo "gpu_kit: no dev-bench at $bench (pass its path or set P3B_DEVBENCH); only the speed part of gpu_session.sh will run" >&2
fi
du -sh _device
echo "gpu_kit: ready; run on the device with carry [\"_device\"]: bash scripts/gpu_session.sh speed|faithfulness"
