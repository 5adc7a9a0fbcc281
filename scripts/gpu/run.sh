#!/usr/bin/env bash
# The one-call GPU check, run on the GPU machine from the repository root (see prepare.sh).
# Writes at most 8 files under $OUT (the device tool's limit) and prints a short table last.
# DEEPVIZ_GPU_CHECK_DEVICE=emu runs the same pipeline against the emulated device (dry run).
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
OUT=${OUT:-/tmp/deepviz-gpu-check}
mkdir -p "$OUT"
dev=${DEEPVIZ_GPU_CHECK_DEVICE:-cuda}
log="$OUT/log.txt"
: >"$log"
step() { echo "== $* ==" | tee -a "$log"; }
summary=()
record() { summary+=("$(printf '%-28s %s' "$1" "$2")"); }

# the executables travel compressed
for f in "$here"/bin/*.gz "$here"/tests/*.gz; do [ -f "$f" ] && gunzip -f "$f" && chmod +x "${f%.gz}"; done

# the test executables look for fixtures under the path they were built at
if [ ! -e /work/main ]; then mkdir -p /work && ln -s "$root" /work/main; fi

step "card"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$log"
  nvidia-smi >>"$log" 2>&1
else
  echo "no nvidia-smi" | tee -a "$log"
fi
echo "commit $(cat "$here/commit.txt" 2>/dev/null)" | tee -a "$log"

step "op, device and engine tests"
for t in emu gpu_ops cuda_device gpu_engine render tensorcore; do
  [ -x "$here/tests/$t" ] || continue
  if timeout 150 "$here/tests/$t" --test-threads=2 --skip no_kernel_spills >>"$log" 2>&1; then record "tests $t" ok; else record "tests $t" "FAILED (see log)"; fi
done

if [ "$dev" = cuda ] && command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    step "compute-sanitizer --tool $tool (gpu_ops)"
    if timeout 120 compute-sanitizer --tool "$tool" --error-exitcode 9 "$here/tests/gpu_ops" --test-threads=1 --skip no_kernel_spills >"$OUT/sanitizer-$tool.txt" 2>&1; then
      record "sanitizer $tool" "ok: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.txt" | tail -n 1)"
    else
      record "sanitizer $tool" "FAILED: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.txt" | tail -n 1)"
    fi
  done
fi

if [ -f "$here/torch_baseline.py" ] && python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  step "PyTorch baseline + export"
  tb=/tmp/deepviz-torch
  rm -rf "$tb"
  if PYTHONUNBUFFERED=1 timeout 200 python3 "$here/torch_baseline.py" --out "$tb" --export \
      --models resnet50,vgg16,googlenet,efficientnet_lite0,resnet18,mobilenet_v2 --jobs saliency,gradcam,cam,dream_step \
      --batches 1,8 --dtypes fp32,tf32 --modes eager --iters 20 >>"$log" 2>&1; then
    record "torch baseline" ok
  else
    record "torch baseline" "FAILED (see log)"
  fi
  cp "$tb/baseline.jsonl" "$OUT/torch_baseline.jsonl" 2>/dev/null
  step "deepviz vs PyTorch ($dev)"
  if set -o pipefail; timeout 200 "$here/bin/compare_torch" "$tb" --device "$dev" --batches 1,8 --iters 20 --json "$OUT/deepviz.jsonl" 2>&1 | tee -a "$log"; then
    record "compare vs torch" "ok (<= 1e-3 rel RMS; saliency: or 3x its self-sensitivity)"
  else
    record "compare vs torch" "some above 1e-3 rel RMS (see log)"
  fi
  set +o pipefail
else
  record "torch baseline" "skipped (no torch with CUDA here)"
fi

if [ -f "$OUT/deepviz.jsonl" ] && [ -f "$OUT/torch_baseline.jsonl" ]; then
  step "throughput: deepviz / PyTorch fp32 eager (same card, same call)"
  python3 - "$OUT/deepviz.jsonl" "$OUT/torch_baseline.jsonl" <<'PY' | tee "$OUT/ratios.txt" | tee -a "$log"
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1]) if '"bench"' in l]
theirs = [json.loads(l) for l in open(sys.argv[2])]
def pick(r, m, j, b, d):
    for t in r:
        if t.get("model") == m and t.get("job") == j and t.get("batch") == b and t.get("dtype") == d and t.get("mode", "eager") == "eager":
            return t
print(f"{'model':<20}{'job':<12}{'batch':>5}{'deepviz ms':>12}{'torch fp32':>12}{'torch tf32':>12}{'speed vs fp32':>15}")
for o in ours:
    f, t = pick(theirs, o["model"], o["job"], o["batch"], "fp32"), pick(theirs, o["model"], o["job"], o["batch"], "tf32")
    fm = f and (f.get("median_ms") or f.get("ms_median")); tm = t and (t.get("median_ms") or t.get("ms_median"))
    ratio = f"{fm / o['median_ms']:.2f}x" if fm else "-"
    print(f"{o['model']:<20}{o['job']:<12}{o['batch']:>5}{o['median_ms']:>12.2f}{(fm or float('nan')):>12.2f}{(tm or float('nan')):>12.2f}{ratio:>15}")
PY
fi

step "summary"
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt" | tee -a "$log"
