#!/usr/bin/env bash
# Install the CUDA compiler (nvcc 13.0) into .toolchain/ from PyPI wheels, for the `cuda`
# feature's build step (build/nvcc.rs), and cuobjdump / nvdisasm for the SASS check
# (tests/sass.rs). No GPU and no system CUDA needed; idempotent.
#
# Layout: the wheels unpack under .toolchain/py/nvidia/cu13/ as a CUDA_HOME of their own
# (bin/nvcc + nvcc.profile, bin/ptxas, nvvm/bin/cicc, nvvm/libdevice, include/, include/cccl);
# .toolchain/cuda is a symlink to it, so build/nvcc.rs finds .toolchain/cuda/bin/nvcc and
# nvcc.profile resolves cicc, libdevice and the headers relative to itself.
set -euo pipefail
cd "$(dirname "$0")/.."

# cuobjdump + nvdisasm read the build's SASS (tests/sass.rs); none older than 13.2 exists, and
# 13.5 reads 13.0's cubins
PINS=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
      nvidia-cuda-cuobjdump==13.5.37 nvidia-cuda-nvdisasm==13.5.37)
STAMP=.toolchain/cuda/.installed
WANT="${PINS[*]}"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && .toolchain/cuda/bin/nvcc --version >/dev/null 2>&1; then
  echo "nvcc already installed: $(.toolchain/cuda/bin/nvcc --version | tail -1)"
  exit 0
fi

PY=$(command -v python3 || command -v python || true)
if [ -z "$PY" ]; then
  echo "error: python3 with pip is needed to install nvcc from PyPI" >&2
  exit 1
fi

start=$(date +%s)
rm -rf .toolchain/py .toolchain/cuda
mkdir -p .toolchain
# --no-deps: the pins are the whole closure the compiler needs (no cudart link, no libs)
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps --target .toolchain/py "${PINS[@]}"

root=.toolchain/py/nvidia/cu13
for f in bin/nvcc bin/ptxas bin/fatbinary bin/cudafe++ bin/cuobjdump bin/nvdisasm nvvm/bin/cicc nvvm/libdevice/libdevice.10.bc include/cuda_runtime.h; do
  if [ ! -e "$root/$f" ]; then
    echo "error: the nvcc wheels did not provide $root/$f; their layout changed" >&2
    exit 1
  fi
done
ln -s py/nvidia/cu13 .toolchain/cuda

# smoke test: one kernel to SASS and PTX, as build/nvcc.rs will
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'extern "C" __global__ void k(float* a) { a[threadIdx.x] = expf(a[threadIdx.x]); }\n' > "$tmp/k.cu"
.toolchain/cuda/bin/nvcc --fatbin -O3 -gencode arch=compute_80,code=sm_80 \
  -gencode arch=compute_80,code=compute_80 "$tmp/k.cu" -o "$tmp/k.fatbin"
echo "$WANT" > "$STAMP"
echo "installed $(.toolchain/cuda/bin/nvcc --version | tail -1) in .toolchain/cuda ($(( $(date +%s) - start )) s)"
