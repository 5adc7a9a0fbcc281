#!/usr/bin/env bash
# Produce the saliency, CAM, Grad-CAM and DeepDream pictures of a sample photo with the default
# model (EfficientNet-Lite0, ImageNet). Usage: scripts/demo.sh [IMAGE] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
bash scripts/install_nvcc.sh   # the pinned nvcc from PyPI, for the CUDA kernels (seconds)
img="${1:-samples/chelsea.png}"
out="${2:-out}"
cargo build --locked --release --quiet -p deepviz --bin deepviz   # not the Python module (python/)
bin=target/release/deepviz
$bin classify --image "$img"
$bin saliency --image "$img" --out "$out" --raw
$bin cam      --image "$img" --out "$out" --raw
$bin gradcam  --image "$img" --out "$out" --raw
$bin dream    --image "$img" --out "$out"
echo "pictures are in $out/"
