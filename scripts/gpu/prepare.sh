#!/usr/bin/env bash
# Build everything the one-call GPU check needs and gather it in .gpu-check/ (git-ignored):
# release test executables and benchmarks with the `cuda` feature, the deepviz binary, the
# torch comparison tool, a copy of ../shared/gpu/torch_baseline.py, and scripts/gpu/run.sh.
# Then, with a GPU lent to the session:
#   run(command="bash .gpu-check/run.sh", carry=[".gpu-check"], timeout_s=400)
# Dry run against the emulated device here: DEEPVIZ_GPU_CHECK_DEVICE=emu bash .gpu-check/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib.sh
need_cargo
bash scripts/install_nvcc.sh >/dev/null
dst=.gpu-check
rm -rf "$dst" && mkdir -p "$dst/tests" "$dst/bin"
cargo build --locked --release --features cuda --example compare_torch
cp target/release/examples/compare_torch "$dst/bin/"
# test executables: every integration test that touches a device
cargo test --locked --release --features cuda --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        if m["target"]["name"] in ("gpu_ops", "gpu_engine", "cuda_device", "emu", "render", "tensorcore"):
            print(m["target"]["name"], m["executable"])
' | while read -r name exe; do cp "$exe" "$dst/tests/$name"; done
cp target/release/ptxas-report.txt "$dst/" 2>/dev/null || true
# the device tool carries at most 64 MiB with the working tree: strip and compress the executables
strip "$dst"/bin/* "$dst"/tests/*
gzip -9 "$dst"/bin/* "$dst"/tests/*
shared=../shared/gpu/torch_baseline.py
[ -f "$shared" ] && cp "$shared" "$dst/" || echo "note: $shared not found; the PyTorch comparison will be skipped" >&2
cp scripts/gpu/run.sh "$dst/run.sh"
git rev-parse HEAD >"$dst/commit.txt"
du -sh "$dst"
ls -l "$dst" "$dst/tests" "$dst/bin"
