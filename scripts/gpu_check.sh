#!/usr/bin/env bash
# The GPU check (issue 14), for the `device` machine: one NVIDIA H200, 16 cores, its own
# python3 with torch, numpy, numba, timm and torchvision but without zarr, numcodecs, dask
# and distributed, which travel as Python 3.12 wheels in .whl (see BENCHMARKS.md, "GPU").
#
#   bash scripts/gpu_check.sh [N]          # N images, default 63305 (all of Broden)
#   OUT=/tmp/gc DEVICE=cpu PY=.venv/bin/python bash scripts/gpu_check.sh 300   # a dry run here
#
# 1. installs the wheels of .whl into /tmp/site when python3 lacks zarr/dask/distributed;
# 2. runs the kernel tests on CUDA (test_tally and test_upsample compare every device path
#    with the NumPy reference; test_replay) and then the quick suite (-m "not slow");
# 3. benchmarks at the Broden profile: generate N images (all cores), build the label cache,
#    a 512 x 7 x 7 synthetic activation cache, the exact quantiles and the tally (six levels)
#    on $DEVICE, then extraction of the demo CNN's conv5 on $DEVICE;
# 4. writes $OUT/gpu_check.json (the stages, the test outcomes, the GPU) and the logs.
# Each step has a timeout so that the whole stays under 8 minutes; a step that fails is
# recorded and the next one still runs.
set -uo pipefail
N=${1:-63305}
OUT=${OUT:-/tmp/gpu_check_out}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
WORK=${WORK:-/tmp/gpu_check_work}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK"
cd "$(dirname "$0")/.."

if ! "$PY" -c "import zarr, numcodecs, dask, distributed" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo none) \
    > "$OUT/gpu.txt" 2>&1
t0=$(date +%s)

step() {    # step NAME TIMEOUT CMD...: run, log to $OUT/NAME.log, record rc and seconds
    local name=$1 limit=$2; shift 2
    local s=$(date +%s)
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "$name $? $(( $(date +%s) - s ))" >> "$OUT/steps.txt"
}
: > "$OUT/steps.txt"
step kernel_tests 120 "$PY" -m pytest -q -x -p no:cacheprovider tests/test_tally.py \
    tests/test_upsample.py tests/test_replay.py
step quick_tests 120 "$PY" -m pytest -q -p no:cacheprovider -m "not slow" tests
step bench_tally 330 "$PY" scripts/bench.py generate labels activations quantiles tally \
    --work "$WORK" --num-images "$N" --profile broden --synthetic-activations 512,7,7 \
    --device "$DEVICE" --json "$OUT/bench_tally.json" --quiet
step bench_extract 120 "$PY" scripts/bench.py extract --work "$WORK" --num-images "$N" \
    --dataset "$WORK/broden_${N}_224_broden" --model demo --layers conv5 \
    --device "$DEVICE" --json "$OUT/bench_extract.json" --quiet

"$PY" - "$OUT" "$t0" <<'EOF'
import json, sys, time
from pathlib import Path
out, t0 = Path(sys.argv[1]), int(sys.argv[2])
steps = {}
for line in (out / "steps.txt").read_text().split("\n"):
    if line.strip():
        name, rc, sec = line.split()
        log = (out / f"{name}.log").read_text(errors="replace").strip().splitlines()
        steps[name] = {"rc": int(rc), "seconds": int(sec), "last_line": log[-1] if log else ""}
bench = {p.stem: json.loads(p.read_text()) for p in out.glob("bench_*.json")}
doc = {"gpu": (out / "gpu.txt").read_text().strip(), "seconds": int(time.time()) - t0,
       "steps": steps, "bench": bench}
(out / "gpu_check.json").write_text(json.dumps(doc, indent=1) + "\n")
print(json.dumps(steps, indent=1))
EOF
