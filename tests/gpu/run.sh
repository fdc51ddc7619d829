#!/bin/sh
# tests/gpu/run.sh - the GPU tests and the CUDA benchmark, on a machine with
# an NVIDIA GPU, its driver, and torch (CUDA build) for the test's Python:
#
#   $ tests/gpu/run.sh            # builds into build/ if needed
#   ... test_offset_round_trip_through_cupy ... ok
#   cuda 1MB cached: 61.2 us/call (hot exec 55.0 us)
#
# Without a GPU it prints one SKIP line and exits 0.  Workers get their
# frameworks from the specs in $OMNIPKG_GPU_CUPY_SPEC (default
# cupy-cuda12x), $OMNIPKG_GPU_TORCH_SPEC (torch) and $OMNIPKG_GPU_JAX_SPEC
# (jax[cuda12],cupy-cuda12x); a framework the daemon cannot install skips its test.
set -eu
cd "$(dirname "$0")/../.."
PY=${OMNI_TEST_PYTHON:-python3}
if ! [ -e /dev/nvidiactl ] || ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
	echo "SKIP tests/gpu: no GPU here (no /dev/nvidiactl or no libcuda.so.1); nothing run"
	exit 0
fi
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
	echo "SKIP tests/gpu: $PY has no CUDA-enabled torch; nothing run"
	exit 0
fi
[ -f build/libomnipkg-cuda.so ] || { cmake -S . -B build >/dev/null && cmake --build build -j"$(nproc)"; }
export OMNIPKG_TEST_BUILD="$PWD/build" OMNIPKG_CUDA_LIB="$PWD/build/libomnipkg-cuda.so"
export PYTHONPATH="$PWD/src/python:$PWD/tests/integration:$PWD/tests/gpu"
unset OMNIPKG_CUDA_DRIVER   # the real driver
"$PY" -m unittest -v test_gpu_ipc
"$PY" tests/gpu/bench_cuda.py
