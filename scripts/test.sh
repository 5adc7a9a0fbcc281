#!/usr/bin/env bash
# Run the whole test suite. Installs what is missing; safe to run on a fresh clone.
# Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
echo "== cargo test (all targets) =="
cargo test --locked --all-targets 2>&1
echo "== doc tests =="
cargo test --locked --doc 2>&1
