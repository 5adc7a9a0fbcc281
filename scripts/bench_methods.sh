#!/usr/bin/env bash
# Each attribution method's images per second on the CPU: deepviz's CPU engine
# (examples/bench_cpu.rs) against what captum / pytorch-grad-cam users run
# (scripts/bench_methods_torch.py), efficientnet_lite0 (the default model, real weights), same
# machine, same thread count, same pseudo-random input, alternating so that load hits both alike.
#
#   scripts/bench_methods.sh [--check] [METHOD...]     (default: every method below)
#
# --check first compares the two sides' maps of samples/chelsea.png (preprocessed in Python)
# for each method (scripts/bench_methods_torch.py --check) and stops if a map is off.
# Prints per method and batch (1 and 8; Score-CAM and Ablation-CAM at batch 1 only: seconds to
# a minute an image) the better median of the rounds, images/s and the ratio deepviz / PyTorch
# in images/s (above 1: deepviz is faster), and the 1-minute load average before each round;
# appends the raw lines (with "load1") to benches/results/<date>-methods-cpu.jsonl.
# Installs CPU PyTorch (scripts/torch_cpu_env.sh) and grad-cam, ttach, captum into it if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
check=0
[ "${1:-}" = --check ] && { check=1; shift; }
methods=("$@")
[ ${#methods[@]} -gt 0 ] || methods=(saliency gradcam gradcampp xgradcam layercam eigencam ig smoothgrad scorecam ablationcam)
bash scripts/torch_cpu_env.sh >/dev/null
PY=.toolchain/torch/bin/python
if ! "$PY" -c "import pytorch_grad_cam, captum" 2>/dev/null; then
  # --no-deps: their `torch` requirement would pull the CUDA wheels (see torch_cpu_env.sh)
  "$PY" -m pip install --disable-pip-version-check -q --no-deps grad-cam==1.5.7 ttach==0.0.3 captum==0.9.0
  "$PY" -m pip install --disable-pip-version-check -q tqdm==4.70.1 opencv-python-headless==5.1.0.95 \
      matplotlib==3.11.2 scikit-learn==1.9.1 scipy==1.17.1 packaging
fi
cargo build --locked --release --quiet --example bench_cpu --bin deepviz
model=weights/efficientnet_lite0.safetensors
export RAYON_NUM_THREADS=2 TORCH_THREADS=2 OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2

if [ "$check" = 1 ]; then
  dir=target/bench-methods
  mkdir -p "$dir"
  "$PY" scripts/bench_methods_torch.py "$model" --input samples/chelsea.png "$dir/x.npy"
  for m in "${methods[@]}"; do
    rm -rf "$dir/$m"
    target/release/deepviz "$m" --device cpu --model "$model" --image "$dir/x.npy" --raw --out "$dir/$m" >/dev/null
    "$PY" scripts/bench_methods_torch.py "$model" "$m" --check "$dir/x.npy" "$(ls "$dir/$m"/*.npy | head -1)"
  done
fi

mkdir -p benches/results
out="benches/results/$(date +%Y-%m-%d)-methods-cpu.jsonl"
field() { "$PY" -c "import json,sys; print(json.loads(sys.argv[1])['$1'])" "$2"; }
with_load() { "$PY" -c "import json,sys; d=json.loads(sys.argv[1]); d['load1']=float(sys.argv[2]); print(json.dumps(d))" "$1" "$2"; }
printf '%-12s %5s %12s %12s %10s %10s %7s  %s\n' method batch "deepviz ms" "torch ms" "dv img/s" "pt img/s" ratio load
for m in "${methods[@]}"; do
  for batch in 1 8; do
    # iterations, warm-ups, rounds: fewer for the slow methods
    case "$m" in
      scorecam|ablationcam) [ "$batch" = 1 ] || continue; it=2; wu=1; rounds=1 ;;
      ig|smoothgrad) it=$([ "$batch" = 1 ] && echo 3 || echo 2); wu=1; rounds=$([ "$batch" = 1 ] && echo 2 || echo 1) ;;
      *) it=$([ "$batch" = 1 ] && echo 7 || echo 3); wu=2; rounds=2 ;;
    esac
    best_d=1e18; best_t=1e18; loads=""
    for round in $(seq "$rounds"); do
      l=$(cut -d' ' -f1 /proc/loadavg); d=$(target/release/examples/bench_cpu "$model" "$m" "$batch" "$it" "$wu"); with_load "$d" "$l" >> "$out"
      l2=$(cut -d' ' -f1 /proc/loadavg); t=$("$PY" scripts/bench_methods_torch.py "$model" "$m" "$batch" "$it" "$wu"); with_load "$t" "$l2" >> "$out"
      loads="$loads $l/$l2"
      best_d=$("$PY" -c "print(min($best_d, $(field median_ms "$d")))"); best_t=$("$PY" -c "print(min($best_t, $(field median_ms "$t")))")
    done
    "$PY" -c "d,t,b=$best_d,$best_t,$batch; print('%-12s %5d %12.1f %12.1f %10.3f %10.3f %7.2f ' % ('$m', b, d, t, b*1e3/d, b*1e3/t, t/d), end='')"
    echo "$loads"
  done
done
echo "raw: $out"
