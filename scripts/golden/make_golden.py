#!/usr/bin/env python3
"""Regenerate deepviz's golden reference files (tests/fixtures/golden/).

  python3 scripts/golden/make_golden.py                 # everything
  python3 scripts/golden/make_golden.py --only resnet18 # one (repeatable)
  python3 scripts/golden/make_golden.py --only efficientnet_lite0_default
  python3 scripts/golden/make_golden.py --top5          # just print the real
                                                        # model's top-5 (both preprocessings)

Needs: jax jaxlib numpy safetensors pillow (CPU only; no PyTorch).
See README.md for the weight generator and the file layout.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nets  # noqa: E402  (enables jax x64)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_DIR = os.path.join(REPO, "tests", "fixtures", "golden")
INPUT_SHAPE = (2, 3, 96, 112)
INPUT_SCALE = 1.5
DEFAULT_WEIGHTS = os.path.join(REPO, "weights", "efficientnet_lite0.safetensors")
PHOTOS = [os.path.join(REPO, "samples", "chelsea.png"), os.path.join(REPO, "samples", "coffee.png")]
CLASSES = os.path.join(REPO, "weights", "imagenet_classes.txt")
PREPROCESS = {
    "tf": ([0.498039, 0.498039, 0.498039], [0.501961, 0.501961, 0.501961]),
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
}


def random_input(seed=nets.SEED):
    n = int(np.prod(INPUT_SHAPE))
    u = nets.uniforms("input", n, seed)
    return ((2.0 * u - 1.0) * INPUT_SCALE).astype(np.float32).reshape(INPUT_SHAPE)


def compute(fwd, P, x, gc_layer, cam, dream_layer):
    """All golden outputs (float64 numpy) for batch x (float64 numpy)."""
    cam_layer, cam_linear = cam if cam else (None, None)
    want = {gc_layer, dream_layer} | ({cam_layer} if cam_layer else set())

    def f_acts(P, x):
        acts = {}

        def rec(n, v):
            if n in want:
                acts[n] = v
            return v

        return fwd(P, x, rec), acts

    x = jnp.asarray(x, dtype=jnp.float64)
    logits, acts = jax.jit(f_acts)(P, x)
    for n in want:
        assert n in acts, f"layer {n} never tapped"
    cls = jnp.argmax(logits, axis=1)
    onehot = jax.nn.one_hot(cls, logits.shape[1], dtype=jnp.float64)

    def obj(x, delta, P):
        def tap(n, v):
            return v + delta if n == gc_layer else v

        return jnp.sum(fwd(P, x, tap) * onehot)

    gx, gA = jax.jit(jax.grad(obj, argnums=(0, 1)))(x, jnp.zeros_like(acts[gc_layer]), P)

    def dobj(x, P):
        box = {}

        def tap(n, v):
            if n == dream_layer:
                box["a"] = v
            return v

        fwd(P, x, tap)
        return 0.5 * jnp.sum(box["a"] ** 2)

    gd = jax.jit(jax.grad(dobj))(x, P)

    A = acts[gc_layer]
    alpha = jnp.mean(gA, axis=(2, 3))
    gradcam = jnp.maximum(jnp.einsum("bk,bkhw->bhw", alpha, A), 0.0)
    out = {
        "cls": np.asarray(cls, dtype=np.int64),
        "logits": np.asarray(logits),
        "saliency": np.asarray(jnp.max(jnp.abs(gx), axis=1)),
        "gradcam": np.asarray(gradcam),
        "dream_grad": np.asarray(gd),
    }
    if cam_layer:
        W = P[cam_linear + ".weight"]
        out["cam"] = np.asarray(jnp.einsum("bk,bkhw->bhw", W[cls], acts[cam_layer]))
    shapes = {n: list(acts[n].shape) for n in want}
    return out, shapes


def write(path, x, out, meta):
    tensors = {"x": np.ascontiguousarray(x, dtype=np.float32)}
    for k, v in out.items():
        tensors[k] = np.ascontiguousarray(v if v.dtype == np.int64 else v.astype(np.float32))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_sorted(tensors, {k: str(v) for k, v in meta.items()}, path)
    return os.path.getsize(path)


def save_sorted(tensors, metadata, path):
    """safetensors writer with a deterministic header (sorted keys), so that
    regenerating gives byte-identical files. Same format as safetensors'."""
    dt = {np.dtype("float32"): "F32", np.dtype("int64"): "I64", np.dtype("float64"): "F64"}
    header, blobs, off = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dt[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def base_meta(name, arch, spec, gc, cam, dream):
    meta = {"arch": arch, "gradcam_layer": gc, "dream_layer": dream, "model": name}
    if cam:
        meta["cam_layer"], meta["cam_linear"] = cam
    meta["params"] = json.dumps([[n, list(s), d] for n, s, d in spec])
    return meta


def make_random(name, seed=nets.SEED):
    arch, pfn, fwd, gc, cam, dream = nets.SPECS[name]
    t0 = time.time()
    spec = pfn()
    P, _ = nets.make_params(spec, seed)
    x = random_input(seed)
    out, shapes = compute(fwd, P, x.astype(np.float64), gc, cam, dream)
    meta = base_meta(name, arch, spec, gc, cam, dream)
    meta.update(
        seed=str(seed),
        input=f"uniforms(name='input') -> (2u-1)*{INPUT_SCALE}, shape {list(INPUT_SHAPE)}",
        dtype_note="computed in float64 (weights rounded to f32 then upcast); stored as f32",
    )
    path = os.path.join(OUT_DIR, f"{name}.safetensors")
    size = write(path, x, out, meta)
    report(name, path, size, out, shapes, gc, cam, dream, time.time() - t0)


def report(name, path, size, out, shapes, gc, cam, dream, dt):
    print(f"== {name}: {os.path.relpath(path, REPO)} ({size / 1024:.0f} KiB, {dt:.1f}s)")
    print(f"   cls={out['cls'].tolist()} logits[:, :3]={np.round(out['logits'][:, :3], 5).tolist()}")
    print(f"   gradcam layer {gc}: {shapes[gc]} -> gradcam {list(out['gradcam'].shape)}")
    if cam:
        print(f"   cam layer {cam[0]}: {shapes[cam[0]]} via {cam[1]} -> cam {list(out['cam'].shape)}")
    print(f"   dream layer {dream}: {shapes[dream]}")
    sys.stdout.flush()


# ---------------------------------------------------------------------------
# real default model (efficientnet_lite_pytorch naming, real ImageNet weights)
# ---------------------------------------------------------------------------


def load_photo(path, mean, std, size=224):
    """shorter side -> size (PIL bilinear, antialiased), centre crop, /255, normalise."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    img = img.resize((nw, nh), Image.BILINEAR)
    top = int(round((nh - size) / 2.0))
    left = int(round((nw - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    a = np.asarray(img, dtype=np.float64) / 255.0
    a = (a - np.asarray(mean)) / np.asarray(std)
    return a.transpose(2, 0, 1).astype(np.float32)


def load_default():
    raw = load_file(DEFAULT_WEIGHTS)
    from safetensors import safe_open

    with safe_open(DEFAULT_WEIGHTS, "np") as f:
        meta = f.metadata() or {}
    return raw, meta


def classes():
    if not os.path.exists(CLASSES):
        return [str(i) for i in range(1000)]
    with open(CLASSES) as f:
        names = [l.strip() for l in f if l.strip()]
    return names


def top5(logits):
    names = classes()
    res = []
    for row in np.asarray(logits):
        p = np.exp(row - row.max())
        p /= p.sum()
        idx = np.argsort(-p)[:5]
        res.append([(int(i), names[i], float(p[i])) for i in idx])
    return res


def print_top5():
    raw, wmeta = load_default()
    P = nets.to_jax(raw)
    fwd = jax.jit(lambda P, x: nets.pkg_lite0_forward(P, x))
    for label, (mean, std) in PREPROCESS.items():
        x = np.stack([load_photo(p, mean, std) for p in PHOTOS]).astype(np.float64)
        for photo, t in zip(PHOTOS, top5(fwd(P, x))):
            print(f"[{label}] {os.path.basename(photo)}: " + "; ".join(f"{n} ({i}) {p:.4f}" for i, n, p in t))


def make_default():
    arch, pfn, fwd, gc, cam, dream = nets.SPECS["efficientnet_lite0_pkg"]
    t0 = time.time()
    raw, wmeta = load_default()
    spec = pfn()
    missing = [n for n, _, _ in spec if n not in raw]
    assert not missing, missing
    mean = [float(v) for v in wmeta["mean"].split(",")]
    std = [float(v) for v in wmeta["std"].split(",")]
    x = np.stack([load_photo(p, mean, std) for p in PHOTOS])
    P = nets.to_jax(raw)
    out, shapes = compute(fwd, P, x.astype(np.float64), gc, cam, dream)
    meta = base_meta("efficientnet_lite0_default", arch, spec, gc, cam, dream)
    meta.update(
        weights="weights/efficientnet_lite0.safetensors",
        images="samples/chelsea.png,samples/coffee.png",
        preprocess="shorter side->224 (PIL bilinear), centre crop 224, /255, (x-mean)/std; x is stored preprocessed",
        mean=wmeta["mean"],
        std=wmeta["std"],
        dtype_note="computed in float64 (f32 weights upcast); stored as f32",
    )
    path = os.path.join(OUT_DIR, "efficientnet_lite0_default.safetensors")
    size = write(path, x, out, meta)
    report("efficientnet_lite0_default", path, size, out, shapes, gc, cam, dream, time.time() - t0)
    for photo, t in zip(PHOTOS, top5(out["logits"])):
        print(f"   {os.path.basename(photo)}: " + "; ".join(f"{n} ({i}) {p:.4f}" for i, n, p in t))


ALL = list(nets.SPECS) + ["efficientnet_lite0_default"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=ALL, help="generate only this fixture (repeatable)")
    ap.add_argument("--top5", action="store_true", help="print the real model's top-5 for both preprocessings")
    a = ap.parse_args()
    if a.top5:
        print_top5()
        return
    for name in a.only or ALL:
        if name == "efficientnet_lite0_default":
            make_default()
        else:
            make_random(name)


if __name__ == "__main__":
    main()
