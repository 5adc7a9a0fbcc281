#!/usr/bin/env bash
# deepviz's CPU engine against PyTorch on the CPU, same machine, same thread count, same run:
# saliency and Grad-CAM on resnet50 (torchvision, random weights) and the default
# efficientnet_lite0 (real weights), batches 1 and 8. Prints a table of median times and the
# ratio deepviz / PyTorch (below 1: deepviz is faster) and appends the raw lines to
# benches/results/<date>-cpu.jsonl.
#
#   scripts/bench_cpu.sh [THREADS]        (default 2)
#
# Installs CPU PyTorch into .toolchain/torch (scripts/torch_cpu_env.sh) if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
threads="${1:-2}"
bash scripts/install_nvcc.sh >/dev/null
bash scripts/torch_cpu_env.sh >/dev/null
PY=.toolchain/torch/bin/python
cargo build --locked --release --quiet --example bench_cpu
mkdir -p target/bench-models benches/results
r50=target/bench-models/resnet50_random.safetensors
[ -f "$r50" ] || "$PY" scripts/export_torch.py resnet50 -o "$r50"
lite0=weights/efficientnet_lite0.safetensors
out="benches/results/$(date +%Y-%m-%d)-cpu.jsonl"
export RAYON_NUM_THREADS="$threads" TORCH_THREADS="$threads" OMP_NUM_THREADS="$threads"
printf '%-20s %-9s %5s %12s %12s %8s\n' model job batch "deepviz ms" "torch ms" ratio
for model in "$r50" "$lite0"; do
  for job in saliency gradcam; do
    for batch in 1 8; do
      iters=$([ "$batch" = 1 ] && echo 9 || echo 5)
      # alternate, so drift on a shared machine hits both alike; keep the better median of two
      best_d=""; best_t=""
      for round in 1 2; do
        d=$(target/release/examples/bench_cpu "$model" "$job" "$batch" "$iters")
        t=$("$PY" scripts/bench_cpu_torch.py "$model" "$job" "$batch" "$iters")
        echo "$d" >> "$out"; echo "$t" >> "$out"
        dm=$(echo "$d" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["median_ms"])')
        tm=$(echo "$t" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["median_ms"])')
        best_d=$("$PY" -c "print(min(x for x in [$dm, ${best_d:-1e18}]))")
        best_t=$("$PY" -c "print(min(x for x in [$tm, ${best_t:-1e18}]))")
      done
      name=$(basename "$model" .safetensors)
      printf '%-20s %-9s %5s %12.1f %12.1f %8.2f\n' "$name" "$job" "$batch" "$best_d" "$best_t" "$("$PY" -c "print($best_d / $best_t)")"
    done
  done
done
echo "raw: $out"
