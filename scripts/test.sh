#!/usr/bin/env bash
# Run the whole test suite. Installs what is missing; safe to run on a fresh clone.
# Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
# each step's start, in minutes since this script began (CI's budget is 30 minutes)
step() { printf '== %s (at %dm%02ds) ==\n' "$1" $((SECONDS / 60)) $((SECONDS % 60)); }
bash scripts/install_nvcc.sh   # the pinned nvcc from PyPI, for the CUDA kernels (seconds)
# headless Chromium for the report's browser test (tests/dissect.rs); installed once, as root
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
# the tests' scratch folders (std::env::temp_dir(), pytest's tmp_path) go under target/, emptied
# at each run: ~420 folders a run no longer pile up in /tmp, and the last run's stay to look at
export TMPDIR="$PWD/target/test-tmp"
rm -rf "$TMPDIR" && mkdir -p "$TMPDIR"
step "cargo test (all targets)"
cargo test --locked --all-targets 2>&1
# the libFuzzer crate (fuzz/, scripts/fuzz.sh) is not run here, only checked against the library
# and its own lock file, so that neither rots between fuzzing sessions (~1.5 min)
step "fuzz crate (cargo check)"
cargo check --locked --manifest-path fuzz/Cargo.toml --bins 2>&1
step "doc tests"
cargo test --locked --doc 2>&1
# every public item documented (#![warn(missing_docs)]) and every intra-doc link resolved (~1 min)
step "rustdoc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps -p deepviz 2>&1
step "python package"
bash scripts/test_python.sh 2>&1
step "done"
