#!/usr/bin/env bash
# The GPU measurements of BENCHMARKS.md section 4, as one prepared device call each (H100/H200), in
# priority order, every step under its own time limit so the call ends well inside the 10-minute limit.
# Prepare first, on the CPU machine: bash scripts/gpu_kit.sh   (wheels + dev-bench copy in _device/)
#
#   bash scripts/gpu_session.sh speed          # < 9.5 min: Table 7 (eager/fast/compiled) + P3B step cost
#   bash scripts/gpu_session.sh faithfulness   # < 8.5 min: same-run keep ratios of the cheap BPI (dev-bench)
#   PYTHON=.venv/bin/python bash scripts/gpu_session.sh smoke   # CPU plumbing check of both parts (~3 min)
#
# Results (one JSON per step, logs, env) go to $OUT (the device tool's folder) or runs/gpu_session.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:-speed}
case $part in speed | faithfulness | smoke) ;;
  *) echo "gpu_session: unknown part '$part' (speed | faithfulness | smoke)" >&2; exit 2 ;;
esac
out=${OUT:-runs/gpu_session}
py=${PYTHON:-python3}
mkdir -p "$out"
if [ "$part" != smoke ] && ls _device/whl/*.whl >/dev/null 2>&1; then  # smoke: the local venv has them
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    _device/whl/*.whl || { echo "gpu_session: installing _device/whl failed" >&2; exit 2; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
{ date -u; git log --oneline -1 2>/dev/null; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  "$py" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} > "$out/env.txt" 2>&1

step() {  # step NAME.EXT SECONDS CMD... : stdout -> $out/NAME.EXT, stderr -> $out/NAME.log
  local file=$1 limit=$2 name=${1%.*}; shift 2
  local t0=$SECONDS
  timeout --signal=INT --kill-after=20 "$limit" "$@" > "$out/$file" 2> "$out/$name.log"
  local rc=$?
  echo "gpu_session: $name rc=$rc in $((SECONDS - t0)) s (limit $limit s)" | tee -a "$out/env.txt"
}

case $part in
  speed)
    step gpu_bench.json 330 "$py" -m scripts.gpu_bench --time-budget 300 --precompile-timeout 150
    step p3b_step_cost.json 200 "$py" -m scripts.p3b_step_cost --device cuda --time-fast 0.25:1 0.0625:1 \
      --compare-steps 0 ;;
  faithfulness)
    [ -d _device/dev-bench ] || { echo "gpu_session: _device/dev-bench missing: run scripts/gpu_kit.sh" >&2; exit 2; }
    step bpi_faithfulness.txt 480 "$py" -m scripts.bpi_faithfulness --bench-dir _device/dev-bench --epochs 30 \
      --output-dir runs/bpi_faithfulness_gpu
    cp runs/bpi_faithfulness_gpu/faithfulness.json runs/bpi_faithfulness_gpu/p3b_shadows.png "$out/" 2>/dev/null ;;
  smoke)  # tiny CPU versions of both parts: checks this script, the kit and the scripts' flags, no figures
    step gpu_bench.json 240 "$py" -m scripts.gpu_bench --device cpu --archs deit-small --reductions 0.9 --batch-size 2 \
      --repeats 1 --warmup 0 --no-extras --variants eager,fast --precompile-workers 0
    step p3b_step_cost.json 240 "$py" -m scripts.p3b_step_cost --presets small --batches 8 --warmup 1 --steps 4 \
      --compare-steps 0
    bench=_device/dev-bench; [ -d "$bench" ] || bench=${P3B_DEVBENCH:-../shared/dev-bench}
    step bpi_faithfulness.txt 300 "$py" -m scripts.bpi_faithfulness --bench-dir "$bench" --smoke --output-dir runs/gpu_session_smoke
    cp runs/gpu_session_smoke/faithfulness.json "$out/" 2>/dev/null ;;
esac
