#!/usr/bin/env bash
# Create a CPU-only PyTorch + torchvision (+ timm, efficientnet_lite_pytorch) virtualenv from PyPI
# (download.pytorch.org is not reachable here), for the PyPI-torch side of deepviz's references
# and benchmarks: scripts/golden/make_hooks.py, scripts/golden/make_onnx.py (torch.onnx.export needs
# the `onnx` package), scripts/bench_cpu_torch.py. Not used by the tests.
#
#   usage: scripts/torch_cpu_env.sh [VENV_DIR]      (default .toolchain/torch)
#   env:   CUDA_LIBS=stub (default) | real          PYTHON=python3
#          LIBS=1: also captum 0.9.0 and pytorch-grad-cam (grad-cam) 1.5.7 for
#                  scripts/golden/make_libs.py (into an existing venv too)
#
# The PyPI torch wheel is a CUDA build: torch/_C links (DT_NEEDED) against 12 CUDA
# libraries, so `import torch` fails without them even on a CPU-only box.
#   CUDA_LIBS=stub : build ~20 KB stand-in .so files for those 12 sonames with gcc (from the
#                    symbols torch's own ELF files import); every call returns an error, so torch
#                    behaves exactly as on a machine with no NVIDIA driver. ~0.55 GB download.
#   CUDA_LIBS=real : install the 11 nvidia-* wheels that provide them, pinned to torch 2.15.0's
#                    metadata (adds ~1.75 GB download, ~2.6 GB on disk). Use this on a GPU machine.
# Not installed in either mode (not needed at import time): triton, cuda-bindings, cuda-toolkit
# meta-package, nvidia-cusolver (lazily dlopen'ed), nvidia-nvtx, nvidia-nvjitlink.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.toolchain/torch}"
PIP=("$VENV/bin/pip" install --disable-pip-version-check -q)
# LIBS=1: the attribution libraries, without their dependency lists (grad-cam's names the GUI
# opencv-python and torch itself), then what they import: ttach, headless OpenCV, scikit-learn
# (grad-cam's __init__ imports every method), tqdm, matplotlib (captum.attr imports it)
libs() {
  [ "${LIBS:-0}" = 1 ] || return 0
  "$VENV/bin/python" -c "import captum, pytorch_grad_cam" 2>/dev/null && return 0
  "${PIP[@]}" --no-deps captum==0.9.0 grad-cam==1.5.7 ttach==0.0.3
  "${PIP[@]}" opencv-python-headless==5.1.0.95 scikit-learn==1.9.1 scipy==1.17.1 tqdm==4.70.1 \
      matplotlib==3.11.2 packaging==26.4
}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import torch, torchvision, timm, efficientnet_lite_pytorch, onnx" 2>/dev/null; then
  libs
  echo "torch already installed in $VENV"
  exit 0
fi
PY="${PYTHON:-python3}"
MODE="${CUDA_LIBS:-stub}"

"$PY" -m venv "$VENV"
# torch/torchvision without their dependency lists (which would pull triton + nvidia-* = GBs)
"${PIP[@]}" --no-deps torch==2.15.0 torchvision==0.29.2
# torch's pure-python deps (+ setuptools>=77.0.3 it declares), torchvision's numpy/pillow, and safetensors
"${PIP[@]}" filelock==4.3.1 typing-extensions==4.16.0 sympy==1.14.0 mpmath==1.3.0 networkx==3.6.1 \
    jinja2==3.1.6 MarkupSafe==3.0.4 fsspec==2026.9.0 'setuptools>=77.0.3' \
    numpy==2.4.6 pillow==13.0.0 safetensors==0.8.0
# what torch.onnx.export needs to write a model (scripts/golden/make_onnx.py)
"${PIP[@]}" onnx==1.23.2 protobuf==7.36.2 ml_dtypes==0.7.0
# the model code of the timm and efficientnet_lite_pytorch namings (pure python; their optional
# hub dependencies are not needed for models built from a state dict)
"${PIP[@]}" --no-deps timm==1.0.31 efficientnet_lite_pytorch==0.1.0

SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
case "$MODE" in
  real)
    "${PIP[@]}" --no-deps nvidia-cuda-runtime==13.2.86 nvidia-cuda-cupti==13.2.86 nvidia-cuda-nvrtc==13.2.86 \
        nvidia-cublas==13.4.1.3 nvidia-cufft==12.2.0.57 nvidia-cufile==1.17.1.22 nvidia-cusparse==12.7.10.12 \
        nvidia-cudnn-cu13==9.26.0.51 nvidia-cusparselt-cu13==0.8.1 nvidia-nccl-cu13==2.30.7 nvidia-nvshmem-cu13==3.7.2
    ;;
  stub)
    command -v gcc >/dev/null && command -v readelf >/dev/null || { echo "stub mode needs gcc and readelf (binutils)" >&2; exit 1; }
    "$VENV/bin/python" - "$SITE" <<'PYEOF'
#!/usr/bin/env python3
"""Build tiny stand-in .so files for the CUDA libraries that a PyPI (CUDA) torch
wheel links against, so that `import torch` works on a CPU-only machine without
downloading the ~1.8 GB of nvidia-* wheels.

Only the libraries in the DT_NEEDED closure of torch/_C*.so are stubbed (the
lazily dlopen'ed ones such as libtorch_cuda_linalg/cusolver and libcuda are not).
Every stub function returns an error code (35 = cudaErrorInsufficientDriver for
cudart, i.e. exactly what the real cudart returns on a machine without a driver),
so torch behaves as on a machine with no NVIDIA driver: torch.cuda.is_available()
is False. Symbol names, symbol versions and FUNC/OBJECT types are all read from
torch's own ELF files with readelf, so nothing is hard-coded per torch version.

usage: make_cuda_stubs.py SITE_PACKAGES_DIR
Stubs go to SITE_PACKAGES/nvidia/{cu13,cudnn,nccl,...}/lib, i.e. the directories in
torch's RPATH (and where torch/__init__.py looks), so no LD_LIBRARY_PATH is needed.
Installing the real nvidia-* wheels later simply overwrites them.
"""
import glob, os, re, subprocess, sys, tempfile

site = os.path.abspath(sys.argv[1])
tlib = os.path.join(site, "torch", "lib")


def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def needed(path):
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", sh("readelf", "-d", "-W", path))


def rpath(path):
    m = re.search(r"\((?:RPATH|RUNPATH)\)\s+Library r(?:un)?path: \[([^\]]+)\]", sh("readelf", "-d", "-W", path))
    return [p.replace("$ORIGIN", os.path.dirname(path)) for p in m.group(1).split(":")] if m else []


system = set(re.findall(r"^\s+(\S+) \(", sh("ldconfig", "-p"), re.M))

# DT_NEEDED closure of torch._C inside torch/lib; collect the sonames found nowhere.
start = glob.glob(os.path.join(site, "torch", "_C*.so"))[0]
todo, seen, missing, loaded = [start], set(), {}, []
while todo:
    f = todo.pop()
    if f in seen:
        continue
    seen.add(f)
    loaded.append(f)
    for so in needed(f):
        local = os.path.join(tlib, so)
        if os.path.exists(local):
            todo.append(local)
        elif so not in system:
            missing.setdefault(so, rpath(f))

# symbols: versioned ones are tied to a file by the "Version needs" section,
# unversioned ones by the library's name as prefix (ncclX -> libnccl, cuFileX -> libcufile).
defined, wanted = set(), {so: {} for so in missing}  # so -> {name: (type, version)}
ver2file = {}
for f in loaded:
    cur = None
    for line in sh("readelf", "-V", "-W", f).splitlines():
        m = re.search(r"File: (\S+)", line)
        if m:
            cur = m.group(1)
        m = re.search(r"Name: (\S+)", line)
        if m and cur:
            ver2file[m.group(1)] = cur
und = []
for f in loaded:
    for line in sh("readelf", "--dyn-syms", "-W", f).splitlines():
        p = line.split()
        if len(p) < 8 or not p[0].endswith(":"):
            continue
        typ, ndx, name = p[3], p[6], p[7]
        base, _, ver = name.partition("@")
        if ndx != "UND":
            defined.add(base)
        else:
            und.append((base, ver.lstrip("@"), typ))
prefixes = sorted(((re.sub(r"^lib|\.so.*$", "", so).lower(), so) for so in missing), key=lambda t: -len(t[0]))
for base, ver, typ in und:
    so = ver2file.get(ver) if ver else None
    if so is None and not ver and base not in defined:
        so = next((s for pre, s in prefixes if base.lower().startswith(pre)), None)
    if so in missing:
        wanted[so][base] = (typ, ver)

STRINGY = re.compile(r"String|Name")
out_dirs = {}
with tempfile.TemporaryDirectory() as tmp:
    for so, syms in sorted(wanted.items()):
        # put it in the first RPATH directory that the real wheel would use
        dirs = missing[so]
        pick = {"libcudnn": "nvidia/cudnn", "libnccl": "nvidia/nccl", "libnvshmem": "nvidia/nvshmem",
                "libcusparseLt": "nvidia/cusparselt"}
        sub = next((v for k, v in pick.items() if so.startswith(k + ".") or so.startswith(k + "_")), None)
        target = next((d for d in dirs if sub and d.rstrip("/").endswith(sub + "/lib")), None) or \
            next((d for d in dirs if "/nvidia/" in d and d.rstrip("/").endswith("/lib") and "cu1" in d), dirs[0])
        target = os.path.normpath(target)
        os.makedirs(target, exist_ok=True)
        code = ['/* generated CPU-only stand-in for %s: no GPU, every call fails */' % so,
                'static const char msg[] = "%s is a CPU-only stub (no CUDA)";' % so,
                'static char zero_block[4096] __attribute__((aligned(64)));']
        vers = {}
        for name, (typ, ver) in sorted(syms.items()):
            if ver:
                vers.setdefault(ver, []).append(name)
            if typ == "OBJECT":
                code.append('char %s[256] __attribute__((aligned(64)));' % name)
            elif name.startswith("__cudaRegisterFatBinary") and not name.endswith("End"):
                code.append('void *%s(void *a) { (void)a; return zero_block; }' % name)
            elif STRINGY.search(name):
                code.append('const char *%s(void) { return msg; }' % name)
            else:
                code.append('long %s(void) { return 35; }' % name)
        c = os.path.join(tmp, so + ".c")
        open(c, "w").write("\n".join(code) + "\n")
        args = ["gcc", "-shared", "-fPIC", "-O1", "-w", "-fno-builtin", "-o", os.path.join(target, so), c,
                "-Wl,-soname," + so]
        if vers:
            vs = os.path.join(tmp, so + ".map")
            with open(vs, "w") as fh:
                for v, ns in vers.items():
                    fh.write("%s { global: %s };\n" % (v, " ".join(n + ";" for n in ns)))
            args.append("-Wl,--version-script=" + vs)
        subprocess.run(args, check=True)
        print("stub %-24s %4d symbols -> %s" % (so, len(syms), os.path.relpath(target, site)))
PYEOF
    ;;
  *) echo "CUDA_LIBS must be stub or real" >&2; exit 2 ;;
esac

libs
"$VENV/bin/python" - <<'PYEOF'
import torch, torchvision, torch.nn.functional as F
x = torch.randn(1, 3, 8, 8, requires_grad=True)
F.conv2d(x, torch.randn(2, 3, 3, 3), padding=1).sum().backward()
m = torchvision.models.resnet18(weights=None)
inp = torch.randn(2, 3, 64, 64, requires_grad=True)
m(inp).sum().backward()
assert inp.grad is not None and m.conv1.weight.grad is not None
print("OK torch", torch.__version__, "torchvision", torchvision.__version__, "cuda available:", torch.cuda.is_available())
PYEOF
