#!/usr/bin/env bash
# Run the whole test suite. Installs what is missing; safe to run on a fresh clone.
# Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
bash scripts/install_nvcc.sh   # the pinned nvcc from PyPI, for the CUDA kernels (seconds)
# headless Chromium for the report's browser test (tests/dissect.rs); installed once, as root
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
echo "== cargo test (all targets) =="
cargo test --locked --all-targets 2>&1
echo "== doc tests =="
cargo test --locked --doc 2>&1
echo "== python package =="
bash scripts/test_python.sh 2>&1
