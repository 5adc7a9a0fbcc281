#!/usr/bin/env python3
"""Copy the sample images samples/chelsea.png and samples/coffee.png
byte-for-byte out of the scikit-image wheel (skimage/data/).

The wheel is fetched with ``pip download --no-deps scikit-image`` (or given
with --wheel); scikit-image is never installed or imported. Each file is
checked against the sha256 recorded in the wheel's own
skimage/data/_registry.py before it is written.

Usage:
  python3 scripts/fetch_samples.py [--wheel scikit_image-*.whl] [--version X.Y.Z (default 0.26.0)]
"""

import argparse
import ast
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO_ROOT, "samples")
FILES = ["chelsea.png", "coffee.png"]
REGISTRY = "skimage/data/_registry.py"


def fetch_wheel(dest, version):
    spec = f"scikit-image=={version}" if version else "scikit-image"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                    "--only-binary", ":all:", "--disable-pip-version-check", "-q",
                    "-d", dest, spec], check=True)
    wheels = [f for f in os.listdir(dest) if f.endswith(".whl")]
    if len(wheels) != 1:
        raise FileNotFoundError(f"expected one wheel, got {wheels}")
    return os.path.join(dest, wheels[0])


def registry_hashes(src):
    """Return the `registry` dict (path -> sha256) from _registry.py via ast."""
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "registry" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", help="local scikit-image wheel (default: pip download)")
    ap.add_argument("--version", default="0.26.0",
                    help="scikit-image version to download (default: %(default)s; '' = latest)")
    ap.add_argument("--out-dir", default=OUT_DIR)
    args = ap.parse_args()

    os.makedirs(args.out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(tmp, args.version)
        with zipfile.ZipFile(wheel) as z:
            try:
                hashes = registry_hashes(z.read(REGISTRY).decode("utf-8"))
            except KeyError:
                hashes = {}
            print(f"source: {os.path.basename(wheel)}")
            for name in FILES:
                data = z.read(f"skimage/data/{name}")
                digest = hashlib.sha256(data).hexdigest()
                expected = hashes.get(f"data/{name}")
                if expected is not None and expected != digest:
                    raise ValueError(f"{name}: sha256 {digest} != registry {expected}")
                out = os.path.join(args.out_dir, name)
                with open(out, "wb") as f:
                    f.write(data)
                check = "matches _registry.py" if expected else "no registry entry"
                print(f"sha256 {digest}  {os.path.relpath(out, REPO_ROOT)} "
                      f"({len(data)} bytes, {check})")


if __name__ == "__main__":
    main()
