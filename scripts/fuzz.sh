#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers with libFuzzer, on the stable toolchain: the binaries of
# fuzz/ are built with the sanitizer-coverage flags that cargo-fuzz passes (no nightly, no
# cargo-fuzz; libfuzzer-sys from crates.io brings libFuzzer and builds it with the C++ compiler).
#
#   scripts/fuzz.sh TARGET [SECONDS]   fuzz one target (default 60 s); targets: fuzz/targets.rs
#   scripts/fuzz.sh all [SECONDS]      every target in turn, SECONDS each
#   scripts/fuzz.sh merge TARGET       add to fuzz/corpus/TARGET/ the inputs of fuzz/work/TARGET/
#                                      that reach new code (then commit the few KB it added)
#   scripts/fuzz.sh seeds              rewrite the seed files of fuzz/corpus/ (targets::seeds)
#
# A run reads the committed corpus fuzz/corpus/TARGET/ and keeps what it finds in fuzz/work/TARGET/
# (not committed). A crash, an abort, an input over 20 s or a process over 4 GiB stops it with the
# input in fuzz/artifacts/TARGET/; reproduce with `fuzz/target/<host>/release/TARGET FILE`, fix the
# library, and add the input to fuzz/corpus/TARGET/ so the CI run (tests/fuzz.rs) replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
TARGETS="safetensors safetensors_header npy image cli class_file onnx"
cmd=${1:-}
case "$cmd" in
  ""|-h|--help) sed -n '2,17p' "$0"; exit 0 ;;
  seeds) DEEPVIZ_WRITE_SEEDS=1 cargo test --locked --test fuzz the_committed_corpus_holds_every_seed; exit ;;
esac
host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions"
build() { # --target keeps the flags off build scripts (they link without libFuzzer)
  cargo build --locked --release --manifest-path fuzz/Cargo.toml --target "$host" --bin "$1"
}
bin() { echo "fuzz/target/$host/release/$1"; }
fuzz_one() {
  local t=$1 secs=$2
  case " $TARGETS " in *" $t "*) ;; *) echo "error: unknown target '$t' (one of: $TARGETS)" >&2; exit 2 ;; esac
  build "$t"
  mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
  "$(bin "$t")" "fuzz/work/$t" "fuzz/corpus/$t" -artifact_prefix="fuzz/artifacts/$t/" \
    -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1
}
case "$cmd" in
  all) for t in $TARGETS; do fuzz_one "$t" "${2:-60}"; done ;;
  merge)
    t=${2:?usage: scripts/fuzz.sh merge TARGET}
    build "$t"
    "$(bin "$t")" -merge=1 "fuzz/corpus/$t" "fuzz/work/$t" -timeout=20 -rss_limit_mb=4096 -max_len=65536 ;;
  *) fuzz_one "$cmd" "${2:-60}" ;;
esac
