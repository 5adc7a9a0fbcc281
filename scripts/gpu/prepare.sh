#!/usr/bin/env bash
# Build everything the one-call GPU check needs and gather it in .gpu-check/ (git-ignored):
# release test executables and benchmarks with the `cuda` feature, the deepviz binary, the
# torch comparison tool, a copy of ../shared/gpu/torch_baseline.py, and scripts/gpu/run.sh.
# Then, with a GPU lent to the session:
#   run(command="bash .gpu-check/run.sh", carry=[".gpu-check"], timeout_s=590)
# (2026-12-04: 376 s for the run before the CLI, stem, t-SNE, wider sanitizer, batch-1 and
# graph A/B steps were added; expect ~500-560 s, a machine start ~40 s more, of the session's
# 900 s. The steps run in order of what they decide: tests, the CLI on the card, the layer
# table, ncu, PyTorch and the comparison, dissect, t-SNE, Python; each has its own timeout.)
# Dry run against the emulated device here: DEEPVIZ_GPU_CHECK_DEVICE=emu bash .gpu-check/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib.sh
need_cargo
bash scripts/install_nvcc.sh >/dev/null
dst=.gpu-check
rm -rf "$dst" && mkdir -p "$dst/tests" "$dst/bin"
cargo build --locked --release --features cuda --example compare_torch --example conv_layers --example dissect_rate --example tsne_scale --bin deepviz
cp target/release/examples/{compare_torch,conv_layers,dissect_rate,tsne_scale} target/release/deepviz "$dst/bin/"
# the Python package's native module (abi3: loads under the card machine's Python 3.12) for
# python/tests/test_torch.py with CUDA tensors
cargo build --locked --release -p deepviz-python
mkdir -p "$dst/py/deepviz" "$dst/py/tests"
cp python/deepviz/*.py "$dst/py/deepviz/"
cp target/release/lib_native.so "$dst/py/deepviz/_native.abi3.so"
cp python/tests/conftest.py python/tests/test_torch.py "$dst/py/tests/"
cp scripts/gpu/conv_layers_torch.py "$dst/"
# test executables: every integration test that touches a device
cargo test --locked --release --features cuda --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        if m["target"]["name"] in ("gpu_ops", "gpu_engine", "cuda_device", "emu", "render", "tensorcore",
                                   "ops_generic", "methods", "fourier", "dissect", "gpu_memory", "graph"):
            print(m["target"]["name"], m["executable"])
' | while read -r name exe; do cp "$exe" "$dst/tests/$name"; done
cp target/release/ptxas-report.txt "$dst/" 2>/dev/null || true
# the device tool carries at most 64 MiB with the working tree: strip and compress the executables
# The device tool carries at most 64 MiB with the working tree (about 40 of it tracked files):
# strip the executables; cut the embedded default model (18.8 MB in each one that embeds it)
# out of them, to be written back on the card from weights/, which travels anyway (holes.txt:
# file, offset); then one xz archive with a dictionary larger than the tar, so that the code
# the executables share is stored once (about 5 MB in all, against 100 MB gzipped one by one).
strip "$dst"/bin/* "$dst"/tests/* "$dst"/py/deepviz/*.so
python3 - "$dst" weights/efficientnet_lite0.safetensors <<'PY'
import pathlib, sys
dst, w = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_bytes()
with open(dst / "holes.txt", "w") as holes:
    for f in sorted([*dst.glob("bin/*"), *dst.glob("tests/*"), *dst.glob("py/deepviz/*.so")]):
        b = bytearray(f.read_bytes())
        i = b.find(w[:4096])
        if i >= 0:
            assert b[i:i + len(w)] == w, f"{f}: a partial copy of the weights"
            b[i:i + len(w)] = bytes(len(w))
            f.write_bytes(b)
            holes.write(f"{f.relative_to(dst)} {i}\n")
PY
tar -C "$dst" -cf - bin tests py/deepviz/_native.abi3.so | xz -9e --lzma2=dict=256MiB -T1 >"$dst/payload.tar.xz"
rm -rf "$dst/bin" "$dst/tests" "$dst/py/deepviz/_native.abi3.so"
shared=../shared/gpu/torch_baseline.py
[ -f "$shared" ] && cp "$shared" "$dst/" || echo "note: $shared not found; the PyTorch comparison will be skipped" >&2
cp scripts/gpu/run.sh "$dst/run.sh"
git rev-parse HEAD >"$dst/commit.txt"
du -sh "$dst"
ls -l "$dst"
