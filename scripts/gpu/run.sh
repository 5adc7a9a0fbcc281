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

# the executables travel in one xz archive, the embedded weights cut out (prepare.sh)
if [ -f "$here/payload.tar.xz" ]; then
  python3 -c 'import lzma, sys, tarfile; tarfile.open(fileobj=lzma.open(sys.argv[1])).extractall(sys.argv[2])' "$here/payload.tar.xz" "$here"
  python3 - "$here" "$root/weights/efficientnet_lite0.safetensors" <<'PY'
import pathlib, sys
here, w = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_bytes()
for line in (here / "holes.txt").read_text().split("\n"):
    if line:
        f, i = line.rsplit(" ", 1)
        with open(here / f, "r+b") as fh:
            fh.seek(int(i)); fh.write(w)
PY
  chmod +x "$here"/bin/* "$here"/tests/*
fi

# the test executables look for fixtures under the path they were built at
if [ ! -e /work/main ]; then mkdir -p /work && ln -s "$root" /work/main; fi

SECONDS=0
step "card"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$log"
  nvidia-smi >>"$log" 2>&1
else
  echo "no nvidia-smi" | tee -a "$log"
fi
echo "commit $(cat "$here/commit.txt" 2>/dev/null)" | tee -a "$log"

# Phase A: the test executables, and compute-sanitizer's four tools over the op suite at the
# same time (separate processes share the card; nothing is timed in this phase). The
# out-of-memory test, which takes the whole card, runs after them.
sanitize() {  # tool: over every suite whose tests take common::devices(), the card alone
  local f="$OUT/sanitizer-$1.txt" ok=1 t
  : >"$f"
  for t in gpu_ops tensorcore ops_generic dissect; do
    echo "--- $t" >>"$f"
    DEEPVIZ_TEST_DEVICES=cuda timeout "${SANITIZER_S:-45}" compute-sanitizer --tool "$1" --error-exitcode 9 "$here/tests/$t" \
      --test-threads=1 --skip no_kernel_spills >>"$f" 2>&1 || ok=0
  done
  if [ $ok = 1 ]; then
    echo "ok: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$f" | sort | uniq -c | tr -s ' ' | paste -sd';')" >"$f.verdict"
  else
    echo "FAILED or cut short: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$f" | sort | uniq -c | tr -s ' ' | paste -sd';')" >"$f.verdict"
  fi
}
pids=()
if [ "$dev" = cuda ] && command -v compute-sanitizer >/dev/null; then
  step "compute-sanitizer memcheck, racecheck, synccheck, initcheck over the op suites, card only (background)"
  for tool in memcheck racecheck synccheck initcheck; do sanitize "$tool" & pids+=($!); done
fi
step "op, device and engine tests"
run_test() {  # name [filters...]
  local t=$1; shift
  [ -x "$here/tests/$t" ] || { record "tests $t" "missing"; return; }
  [ "$SECONDS" -lt "${TESTS_UNTIL_S:-200}" ] || { record "tests $t" "skipped (out of time)"; return; }
  echo "-- $t $*" >>"$log"
  if timeout 170 "$here/tests/$t" --test-threads=4 --skip no_kernel_spills "$@" >>"$log" 2>&1; then record "tests $t" ok; else record "tests $t" "FAILED (see log)"; fi
}
for t in emu gpu_ops cuda_device gpu_engine render tensorcore ops_generic graph; do run_test "$t"; done
run_test methods every_method_on_the_cuda_engine deepdream_in_tiles
run_test fourier
run_test dissect the_device_counts_equal_the_host_counts_exactly
for p in "${pids[@]}"; do wait "$p"; done
for tool in memcheck racecheck synccheck initcheck; do
  [ -f "$OUT/sanitizer-$tool.txt.verdict" ] && record "sanitizer $tool" "$(cat "$OUT/sanitizer-$tool.txt.verdict")" && rm "$OUT/sanitizer-$tool.txt.verdict"
done
# the device tool brings back 8 files: the sanitizers' logs go into one
cat "$OUT"/sanitizer-*.txt 2>/dev/null | grep -E "SUMMARY|=========" | head -400 >"$OUT/sanitizers.txt"; rm -f "$OUT"/sanitizer-*.txt
run_test gpu_memory

# Phase B: timings, nothing else on the card.
have_torch=0
python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null && have_torch=1
# first in phase B: cheap, and the last item issue 8 waits for
step "the CLI's commands on the card (issue 8's and the methods'), each must exit 0 and write its files"
cli_on_card() {  # name, then the deepviz arguments
  local name=$1; shift
  echo "-- deepviz $*" >>"$log"
  if timeout 60 "$here/bin/deepviz" "$@" >>"$log" 2>&1; then record "cli $name" ok; else record "cli $name" "FAILED (see log)"; fi
}
cd_=/tmp/deepviz-cli; rm -rf "$cd_"; mkdir -p "$cd_"
"$here/bin/deepviz" gen-dataset --out "$cd_/data" --count 96 --size 96 >>"$log" 2>&1
"$here/bin/deepviz" gen-dataset --out "$cd_/broden" --count 64 --size 96 --broden >>"$log" 2>&1
photo="$root/samples/chelsea.png"
cli_on_card filters filters --out "$cd_/filters"
cli_on_card top-patches top-patches "$cd_/data" --layer _blocks.5 --units 0,1,2 --device "$dev" --out "$cd_/top"
cli_on_card neighbors neighbors "$cd_/data" --queries "$photo" --device "$dev" --out "$cd_/nn"
cli_on_card tsne tsne "$cd_/data" --device "$dev" --out "$cd_/tsne"
grep -h '"gradient_on"' "$cd_/tsne/tsne.json" >>"$log" 2>&1
cli_on_card dissect dissect "$cd_/broden" --layer _blocks.15 --device "$dev" --out "$cd_/dissect"
cli_on_card gradcam-aug gradcam --image "$photo" --layer _blocks.15,_blocks.10 --aug-smooth --device "$dev" --out "$cd_/gc"
cli_on_card dream-tiled dream --image "$photo" --tile 160 --device "$dev" --out "$cd_/dream"
cli_on_card maximize-fourier maximize --class 285 --param fourier --steps 50 --device "$dev" --out "$cd_/max"

step "convolutions at resnet50's shapes, batch 64: deepviz and cuDNN"
timeout 90 "$here/bin/conv_layers" 64 "$dev" 20 --json /tmp/conv_deepviz.jsonl >>"$log" 2>&1 && record "conv layers deepviz" ok || record "conv layers deepviz" "FAILED (see log)"
if [ $have_torch = 1 ]; then
  PYTHONUNBUFFERED=1 timeout 90 python3 "$here/conv_layers_torch.py" --batch 64 --reps 20 --json /tmp/conv_torch.jsonl >>"$log" 2>&1 && record "conv layers torch" ok || record "conv layers torch" "FAILED (see log)"
fi
echo "-- batch 1: each layer split-K (the engine's) and not (conv_layers 1; its last lines sum the A/B)" >>"$log"
timeout 60 "$here/bin/conv_layers" 1 "$dev" 50 >/tmp/conv_b1.txt 2>&1 && record "conv layers batch 1" "ok (log)" || record "conv layers batch 1" "FAILED (see log)"
cat /tmp/conv_b1.txt >>"$log"  # (its split-K lines go to the end of conv_ratios.txt: 8 files come back)
echo "-- the first layer's backward data by version (conv_layers --stem)" >>"$log"
timeout 60 "$here/bin/conv_layers" 64 "$dev" 10 --stem >>"$log" 2>&1 && record "conv stem versions" "ok (log)" || record "conv stem versions" "FAILED (see log)"
# ncu (hardware counters; clocks left alone) on the kernels RESULTS.md's "Owed" 1 and 2 ask about:
# the bf16 forward and backward data of a 3x3 stage-3 layer (shape 16; the tap-slice kernels the
# engine runs there, the gather ones' times are in the layer table), and the first layer's
# backward data, v3 and v3b
if [ "$dev" = cuda ] && command -v ncu >/dev/null; then
  sections="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis"
  for k in conv2d_fwd_bf16_tap_f32 conv2d_bwd_data_bf16_tap_f32; do
    echo "-- ncu $k (layer 16, bf16, batch 64)" >>"$log"
    timeout 90 ncu --clock-control none $sections -k "regex:^$k\$" -c 1 "$here/bin/conv_layers" 64 cuda 1 --layer 16 --precision bf16 >>"$log" 2>&1 \
      && record "ncu $k" "ok (log)" || record "ncu $k" "FAILED (see log)"
  done
  for k in conv2d_bwd_data_direct_f32 conv2d_bwd_data_direct4_f32; do
    echo "-- ncu $k (the first layer, cout 64, batch 64)" >>"$log"
    timeout 90 ncu --clock-control none $sections -k "regex:^$k\$" -c 1 "$here/bin/conv_layers" 64 cuda 1 --stem --cout 64 >>"$log" 2>&1 \
      && record "ncu $k" "ok (log)" || record "ncu $k" "FAILED (see log)"
  done
fi
cat /tmp/conv_deepviz.jsonl /tmp/conv_torch.jsonl >"$OUT/conv_layers.jsonl" 2>/dev/null
python3 - "$OUT/conv_layers.jsonl" <<'PY' | tee "$OUT/conv_ratios.txt" | tee -a "$log"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ours = {(r["index"], r["precision"], r["pass"]): r for r in rows if r["engine"] == "deepviz"}
best = {}
for r in rows:
    if r["engine"] == "torch":
        k = (r["index"], r["precision"], r["pass"])
        if k not in best or r["ms"] < best[k]["ms"]:
            best[k] = r
print(f"{'layer':<26}{'prec':>5}{'pass':>9}{'ours TF/s':>10}{'cuDNN TF/s':>11}{'speed':>7}")
tot = {}
for k, o in sorted(ours.items()):
    t = best.get(k)
    if not t:
        continue
    print(f"{o['layer']:<26}{k[1]:>5}{k[2]:>9}{o['tflops']:>10.1f}{t['tflops']:>11.1f}{t['ms'] / o['ms']:>6.2f}x")
    a = tot.setdefault(k[1:], [0.0, 0.0])
    a[0] += o["ms"] * o["count"]; a[1] += t["ms"] * o["count"]
for (p, s), (om, tm) in sorted(tot.items()):
    print(f"resnet50 convs weighted by use, {p} {s}: deepviz {om:.2f} ms, cuDNN (best layout) {tm:.2f} ms, speed {tm / om:.2f}x")
# the two tensor-core stagings side by side: the engine's tap slices against the gather loader
ab = {}
for (i, p, s), o in sorted(ours.items()):
    g = ours.get((i, p, s + "_gather"))
    if g:
        print(f"{o['layer']:<26}{p:>5}{s:>9}  tap {o['tflops']:>6.1f} TF/s, gather {g['tflops']:>6.1f} TF/s: tap {g['ms'] / o['ms']:.2f}x as fast")
        a = ab.setdefault((p, s), [0.0, 0.0])
        a[0] += o["ms"] * o["count"]; a[1] += g["ms"] * o["count"]
for (p, s), (tm, gm) in sorted(ab.items()):
    print(f"tap-slice against gather staging, layers both take, weighted by use, {p} {s}: {tm:.2f} ms against {gm:.2f} ms, {gm / tm:.2f}x")
# fp32 as 3xTF32 on the tensor cores against the exact fp32 kernels (cuda::conv::f32_tensor_cores)
x3 = {}
for (i, p, s), o in sorted(ours.items()):
    t = ours.get((i, p, s + "_x3"))
    if t:
        print(f"{o['layer']:<26}{p:>5}{s:>9}  3xTF32 {t['tflops']:>6.1f} TF/s, exact {o['tflops']:>6.1f} TF/s: 3xTF32 {o['ms'] / t['ms']:.2f}x as fast")
        a = x3.setdefault(s, [0.0, 0.0])
        a[0] += t["ms"] * o["count"]; a[1] += o["ms"] * o["count"]
for s, (tm, em) in sorted(x3.items()):
    print(f"fp32 {s}, layers 3xTF32 takes, weighted by use: 3xTF32 {tm:.2f} ms against exact {em:.2f} ms, {em / tm:.2f}x (above 1: set DEEPVIZ_FP32_TENSOR_CORES=1 as the default)")
# Hopper's wgmma forward against the engine's mma.sync tap kernel and cuDNN (Owed 12)
wg = [0.0, 0.0, 0.0]
for (i, p, s), o in sorted(ours.items()):
    w = ours.get((i, p, s + "_wgmma"))
    if w:
        t = best.get((i, p, s))
        print(f"{o['layer']:<26}{p:>5}{s:>9}  wgmma {w['tflops']:>6.1f} TF/s, mma.sync {o['tflops']:>6.1f} TF/s" + (f", cuDNN {t['tflops']:>6.1f} TF/s" if t else ""))
        wg[0] += w["ms"] * o["count"]; wg[1] += o["ms"] * o["count"]; wg[2] += (t["ms"] if t else float("nan")) * o["count"]
if wg[0]:
    print(f"bf16 fwd on wgmma, weighted by use: {wg[0]:.2f} ms against mma.sync {wg[1]:.2f} ms ({wg[1] / wg[0]:.2f}x) and cuDNN {wg[2]:.2f} ms (wgmma at {wg[2] / wg[0]:.2f}x cuDNN's speed)")
PY
echo "-- batch 1, split-K against unsplit (conv_layers 1)" >>"$OUT/conv_ratios.txt"; grep "^split-K" /tmp/conv_b1.txt >>"$OUT/conv_ratios.txt" 2>/dev/null
echo "-- batch 1, wgmma against mma.sync, bf16 forward (Owed 12)" >>"$OUT/conv_ratios.txt"; grep "^wgmma" /tmp/conv_b1.txt >>"$OUT/conv_ratios.txt" 2>/dev/null

if [ -f "$here/torch_baseline.py" ] && [ $have_torch = 1 ]; then
  step "PyTorch baseline + export"
  tb=/tmp/deepviz-torch
  rm -rf "$tb"
  if PYTHONUNBUFFERED=1 timeout 220 python3 "$here/torch_baseline.py" --out "$tb" --export --peaks \
      --models resnet50,vgg16,googlenet,efficientnet_lite0 --jobs saliency,gradcam,cam,dream_step \
      --batches 8,64 --dtypes fp32,tf32,bf16,bf16cl --modes eager --iters 10 --warmup 3 >>"$log" 2>&1; then
    record "torch baseline" ok
  else
    record "torch baseline" "FAILED (see log)"
  fi
  # batch 1, eager and captured in a CUDA graph (the batch-1 targets: <= 0.1x eager, <= 0.7x graph)
  PYTHONUNBUFFERED=1 timeout 80 python3 "$here/torch_baseline.py" --out "$tb" \
      --models resnet50,vgg16,googlenet,efficientnet_lite0 --jobs saliency,gradcam,cam,dream_step \
      --batches 1 --dtypes fp32,tf32,bf16 --modes eager,graph --iters 20 --warmup 3 >>"$log" 2>&1 \
    && record "torch baseline batch 1" ok || record "torch baseline batch 1" "FAILED or cut short (see log)"
  cp "$tb/baseline.jsonl" "$OUT/torch_baseline.jsonl" 2>/dev/null
  step "deepviz vs PyTorch ($dev)"
  if set -o pipefail; timeout 170 "$here/bin/compare_torch" "$tb" --device "$dev" --batches 1,8,64 --ungraphed-batches 1,8 --unsplit-batches 1 --iters 5 --precisions fp32,tf32,bf16 --json "$OUT/deepviz.jsonl" 2>&1 | tee -a "$log"; then
    record "compare vs torch" "ok (<= 1e-3 rel RMS; saliency: or 3x its self-sensitivity)"
  else
    record "compare vs torch" "some above 1e-3 rel RMS, or cut short (see log)"
  fi
  set +o pipefail
else
  record "torch baseline" "skipped (no torch with CUDA here)"
fi

if [ -f "$OUT/deepviz.jsonl" ] && [ -f "$OUT/torch_baseline.jsonl" ]; then
  step "throughput: deepviz / PyTorch, same dtype (same card, same call)"
  python3 - "$OUT/deepviz.jsonl" "$OUT/torch_baseline.jsonl" <<'PY' | tee "$OUT/ratios.txt" | tee -a "$log"
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1]) if '"bench"' in l]
theirs = [json.loads(l) for l in open(sys.argv[2])]
def ms(m, j, b, d, mode="eager"):
    v = [t["ms_median"] for t in theirs if t.get("model") == m and t.get("job") == j and t.get("batch") == b and t.get("dtype") == d and t.get("mode", "eager") == mode]
    return min(v) if v else None
def best(o, mode="eager"):
    d = o.get("dtype", "fp32")
    # bf16: PyTorch's better of NCHW and channels-last autocast
    cands = [x for x in ([ms(o["model"], o["job"], o["batch"], d, mode)] + ([ms(o["model"], o["job"], o["batch"], "bf16cl", mode)] if d == "bf16" else [])) if x]
    return min(cands) if cands else None
ratio = lambda t, m: f"{t / m:.2f}x" if t else "-"
print("speed = PyTorch's time / deepviz's (above 1: deepviz faster); graph: PyTorch captured in a CUDA graph")
print(f"{'model':<20}{'job':<12}{'dtype':>6}{'batch':>6}{'deepviz ms':>12}{'torch ms':>10}{'speed':>8}{'vs graph':>10}")
graphed = [o for o in ours if o.get("graphs", True) and o.get("split_k", True)]
for o in graphed:
    t, g = best(o), best(o, "graph")
    print(f"{o['model']:<20}{o['job']:<12}{o.get('dtype', 'fp32'):>6}{o['batch']:>6}{o['median_ms']:>12.2f}{(t or float('nan')):>10.2f}{ratio(t, o['median_ms']):>8}{ratio(g, o['median_ms']):>10}")
key = lambda o: (o["model"], o["job"], o.get("dtype"), o["batch"])
def ab(title, flag):  # the product's rows against the same with `flag` off
    other = {key(o): o["median_ms"] for o in ours if not o.get(flag, True)}
    if other:
        print(title)
    for o in graphed:
        p = other.get(key(o))
        if p:
            print(f"{o['model']:<20}{o['job']:<12}{o.get('dtype', 'fp32'):>6}{o['batch']:>6}{p:>10.2f} -> {o['median_ms']:>8.2f}{p / o['median_ms']:>7.2f}x")
ab("deepviz with split-K against the same without (ms; speed-up; below 1: split-K costs)", "split_k")
ab("deepviz with CUDA graphs against the same kernels launched one by one (ms; speed-up)", "graphs")
PY
fi

step "dissect: the counting pass against the plain forward"
for layer in _blocks.15 _blocks.5; do
  timeout 60 "$here/bin/dissect_rate" 256 "$layer" 64 3 "$dev" >>"$log" 2>&1 && record "dissect_rate $layer" "ok (log)" || record "dissect_rate $layer" "FAILED (see log)"
done

step "t-SNE: the exact gradient on the device against Barnes-Hut on the host"
timeout 90 "$here/bin/tsne_scale" 2000,10000 1000 1000 "$dev" >>"$log" 2>&1 && record "tsne_scale" "ok (log)" || record "tsne_scale" "FAILED or cut short (see log)"

if [ $have_torch = 1 ]; then
  step "python: torch interop with CUDA tensors"
  if (cd "$here/py" && PYTHONPATH="$here/py" PYTHONUNBUFFERED=1 timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_torch.py) >>"$log" 2>&1; then
    record "python test_torch" ok
  else
    record "python test_torch" "FAILED (see log)"
  fi
fi

step "summary"
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt" | tee -a "$log"
