#!/usr/bin/env bash
# The GPU check: the whole test suite with the CUDA twins on a real NVIDIA GPU (the simulator
# off), then cnnlab's kernels and whole networks timed against PyTorch CUDA (cuDNN).
#
#     OUT=results bash bench/gpu_check.sh [GPU_TEST_SECONDS] [BENCH_SECONDS] [REST_SECONDS]
#
# Run from the repository root on a machine with an NVIDIA GPU, CUDA, numba-cuda, PyTorch with
# CUDA and torchvision. Wheels in .whl/ (dask, partd, locket where the machine lacks them;
# numpy 2.4, as numba-cuda 0.30 fails under numpy 2.5) are installed first into /tmp/site.
# Writes tests.log, bench.log and bench.json under $OUT (BENCH_SECONDS=0: the tests alone).
set -u
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
GPU_TEST_SECONDS=${1:-240}
BENCH_SECONDS=${2:-200}
REST_SECONDS=${3:-300}
export PYTHONUNBUFFERED=1 NUMBA_ENABLE_CUDASIM=0
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
{
    date -u
    nvidia-smi -L
    ls /dev/nvidiactl
    python3 -c "import numba, numba.cuda, numpy, scipy, torch; import importlib.metadata as m; print('numba', numba.__version__, 'numba-cuda', m.version('numba-cuda'), 'numpy',
numpy.__version__, 'scipy', scipy.__version__, 'torch', torch.__version__); numba.cuda.detect()"
    nproc
} 2>&1 | tee "$OUT/tests.log"

# the tests named for the GPU, the benchmarks, then the rest of the suite, each in its time;
# about one pytest worker per core, each with two Numba threads and one BLAS thread
workers=$(( $(nproc) * 7 / 8 ))
gpu_named="gpu or cuda or device or twin or parity"
run_tests() {  # SECONDS SELECTION
    echo "== pytest -k '$2'" | tee -a "$OUT/tests.log"
    NUMBA_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \
        timeout "$1" python3 -m pytest -n "$workers" -q -p no:cacheprovider -rfEs --tb=short \
        --timeout 150 -k "$2" tests 2>&1 | tee -a "$OUT/tests.log"
    echo "pytest exit status: ${PIPESTATUS[0]}" | tee -a "$OUT/tests.log"
}
run_tests "$GPU_TEST_SECONDS" "$gpu_named"

# the benchmarks (one process each, the first call apart); BENCH_SECONDS=0 skips them
if [ "$BENCH_SECONDS" -gt 0 ]; then
end=$(( $(date +%s) + BENCH_SECONDS ))
left() { echo $(( end - $(date +%s) > 5 ? end - $(date +%s) : 5 )); }
{
    timeout "$(left)" python3 bench/gpu_models.py --batches 1 64 --repeat 20 --json "$OUT/models.json"
    for op in conv2d conv2d_backward pool activation train; do
        timeout "$(left)" python3 -m cnnlab bench --op "$op" --device cuda --repeat 20 --compare torch \
            --json "$OUT/$op.json"
    done
} 2>&1 | tee "$OUT/bench.log"
python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
merged = {}
for path in sorted(out.glob("*.json")):
    merged[path.stem] = json.loads(path.read_text())
    path.unlink()
(out / "bench.json").write_text(json.dumps(merged, indent=1))
PY
fi
run_tests "$REST_SECONDS" "not ($gpu_named)"
