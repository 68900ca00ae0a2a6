#!/usr/bin/env bash
# One call checks the GPU path (issue 12, item 11): the environment, every test marked
# `gpu` (tests/gpu/ compares each device result with a float64 CPU reference), then the
# timings of benchmarks/gpu_timings.py. Under 8 minutes on a GPU; every stage has a time
# limit. Exits non-zero when CUDA is missing, a test fails or a stage runs out of time.
#
#   bash benchmarks/gpu_check.sh                         # on a machine with a CUDA device
#   GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh    # no GPU: the same tests and
#       script on the CPU at small sizes (checks the test code and this script, not the GPU)
#
# Environment: PYTHON (default .venv/bin/python, else python3), GPU_CHECK_DEVICE (cuda or
# cpu), GPU_CHECK_TEST_TIMEOUT and GPU_CHECK_TIMING_TIMEOUT (seconds; 270 and 120).
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=${GPU_CHECK_DEVICE:-cuda}
if [[ $DEVICE != cuda && $DEVICE != cpu ]]; then
    echo "GPU_CHECK_DEVICE must be cuda or cpu, got '$DEVICE'" >&2
    exit 2
fi
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
SMALL=()
[[ $DEVICE == cpu ]] && SMALL=(--small)
START=$SECONDS

stage() {
    echo
    echo "=== $1 ($((SECONDS - START)) s in) ==="
}

stage "environment"
timeout 60 "$PYTHON" - "$DEVICE" <<'EOF'
import sys

import torch

print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA build {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
elif sys.argv[1] == "cuda":
    sys.exit("no CUDA device visible to torch: nothing to check (GPU_CHECK_DEVICE=cpu checks the tests on the CPU)")
else:
    print(f"no CUDA device; running on the CPU, {torch.get_num_threads()} threads")
EOF
rc=$?
if command -v nvidia-smi >/dev/null; then
    timeout 30 nvidia-smi -L
fi
if [[ $rc != 0 ]]; then
    echo "environment check failed (exit $rc)" >&2
    exit "$rc"
fi

stage "tests marked gpu on $DEVICE"
INRNET_GPU_TESTS_ON=$DEVICE timeout "${GPU_CHECK_TEST_TIMEOUT:-270}" \
    "$PYTHON" -m pytest -m gpu tests/ -q -p no:cacheprovider --durations=5
tests_rc=$?

stage "timings on $DEVICE"
timeout "${GPU_CHECK_TIMING_TIMEOUT:-120}" "$PYTHON" benchmarks/gpu_timings.py --device "$DEVICE" "${SMALL[@]}"
timing_rc=$?

stage "summary"
status() { case $1 in 0) echo "ok" ;; 124) echo "timed out" ;; *) echo "FAILED (exit $1)" ;; esac; }
echo "tests:   $(status $tests_rc)"
echo "timings: $(status $timing_rc)"
echo "total:   $((SECONDS - START)) s"
if [[ $tests_rc != 0 ]]; then exit "$tests_rc"; fi
exit "$timing_rc"
