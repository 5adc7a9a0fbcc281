#!/usr/bin/env python3
"""Write weights/imagenet_classes.txt: the 1000 ImageNet-1k class names, one per
line, in class-index order.

Source: the list ``_IMAGENET_CATEGORIES`` in ``torchvision/models/_meta.py``
inside the torchvision wheel. The wheel is fetched with
``pip download --no-deps torchvision`` (or given with --wheel) and the file is
parsed with ``ast`` -- torchvision (and PyTorch) are never imported or installed.

Usage:
  python3 scripts/fetch_imagenet_classes.py [--wheel torchvision-*.whl] [--version X.Y.Z (default 0.29.2)]
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
DEFAULT_OUT = os.path.join(REPO_ROOT, "weights", "imagenet_classes.txt")
META = "torchvision/models/_meta.py"


def fetch_wheel(dest, version):
    spec = f"torchvision=={version}" if version else "torchvision"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                    "--disable-pip-version-check", "-q", "-d", dest, spec], check=True)
    wheels = [f for f in os.listdir(dest) if f.endswith(".whl")]
    if len(wheels) != 1:
        raise FileNotFoundError(f"expected one wheel, got {wheels}")
    return os.path.join(dest, wheels[0])


def categories_from_source(src):
    tree = ast.parse(src)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "_IMAGENET_CATEGORIES"
                for t in node.targets):
            value = ast.literal_eval(node.value)
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ValueError("_IMAGENET_CATEGORIES is not a list of str")
            return value
    raise ValueError("_IMAGENET_CATEGORIES not found")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", help="local torchvision wheel (default: pip download)")
    ap.add_argument("--version", default="0.29.2",
                    help="torchvision version to download (default: %(default)s; '' = latest)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(tmp, args.version)
        with zipfile.ZipFile(wheel) as z:
            src = z.read(META).decode("utf-8")
        wheel_name = os.path.basename(wheel)

    cats = categories_from_source(src)
    if len(cats) != 1000:
        raise ValueError(f"expected 1000 categories, got {len(cats)}")
    if any("\n" in c or c != c.strip() or not c for c in cats):
        raise ValueError("unexpected whitespace in a category name")

    data = ("\n".join(cats) + "\n").encode("utf-8")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(data)
    print(f"source: {wheel_name}:{META}")
    print(f"classes: {len(cats)} (0: {cats[0]!r}, 281: {cats[281]!r}, 999: {cats[999]!r})")
    dups = len(cats) - len(set(cats))
    if dups:
        print(f"note: {dups} duplicate names")
    print(f"sha256 {hashlib.sha256(data).hexdigest()}  {os.path.relpath(args.out, REPO_ROOT)}")


if __name__ == "__main__":
    main()
