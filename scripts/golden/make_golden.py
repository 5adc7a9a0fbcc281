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


def random_input(seed=nets.SEED, name="input"):
    n = int(np.prod(INPUT_SHAPE))
    u = nets.uniforms(name, n, seed)
    return ((2.0 * u - 1.0) * INPUT_SCALE).astype(np.float32).reshape(INPUT_SHAPE)


class Evaluator:
    """All golden outputs of one model, at the precision of its inputs.

    The jitted functions are built once per model, so that evaluating several
    candidate inputs (and both precisions) does not recompile each time. Call it
    with float64 params/x (x64 on) for the reference, or with float32
    params/x inside ``jax.enable_x64(False)`` for the float32 check."""

    def __init__(self, fwd, gc_layer, cam, dream_layer):
        cam_layer, cam_linear = cam if cam else (None, None)
        want = {gc_layer, dream_layer} | ({cam_layer} if cam_layer else set())
        self.gc_layer, self.cam_layer, self.cam_linear, self.want = gc_layer, cam_layer, cam_linear, want

        def f_acts(P, x):
            acts = {}

            def rec(n, v):
                if n in want:
                    acts[n] = v
                return v

            return fwd(P, x, rec), acts

        def obj(x, delta, P, onehot):
            def tap(n, v):
                return v + delta if n == gc_layer else v

            return jnp.sum(fwd(P, x, tap) * onehot)

        def dobj(x, P):
            box = {}

            def tap(n, v):
                if n == dream_layer:
                    box["a"] = v
                return v

            fwd(P, x, tap)
            return 0.5 * jnp.sum(box["a"] ** 2)

        self.f_acts = jax.jit(f_acts)
        self.g_obj = jax.jit(jax.grad(obj, argnums=(0, 1)))
        self.g_dream = jax.jit(jax.grad(dobj))

    def __call__(self, P, x, cls=None):
        """Outputs (numpy, at x's precision) for batch x. cls: the class of
        each item (default: argmax of the logits computed here)."""
        dt = x.dtype
        logits, acts = self.f_acts(P, x)
        for n in self.want:
            assert n in acts, f"layer {n} never tapped"
        cls = jnp.argmax(logits, axis=1) if cls is None else jnp.asarray(cls)
        onehot = jax.nn.one_hot(cls, logits.shape[1], dtype=dt)
        gx, gA = self.g_obj(x, jnp.zeros_like(acts[self.gc_layer]), P, onehot)
        gd = self.g_dream(x, P)

        A = acts[self.gc_layer]
        alpha = jnp.mean(gA, axis=(2, 3))
        gradcam = jnp.maximum(jnp.einsum("bk,bkhw->bhw", alpha, A), 0.0)
        out = {
            "cls": np.asarray(cls, dtype=np.int64),
            "logits": np.asarray(logits),
            "saliency": np.asarray(jnp.max(jnp.abs(gx), axis=1)),
            "gradcam": np.asarray(gradcam),
            "dream_grad": np.asarray(gd),
        }
        if self.cam_layer:
            W = P[self.cam_linear + ".weight"]
            out["cam"] = np.asarray(jnp.einsum("bk,bkhw->bhw", W[cls], acts[self.cam_layer]))
        for k, v in out.items():
            assert k == "cls" or v.dtype == dt, (k, v.dtype, dt)
        shapes = {n: list(acts[n].shape) for n in self.want}
        return out, shapes


def compute(fwd, P, x, gc_layer, cam, dream_layer):
    """All golden outputs (float64 numpy) for batch x (float64 numpy)."""
    return Evaluator(fwd, gc_layer, cam, dream_layer)(P, jnp.asarray(x, dtype=jnp.float64))


# ---------------------------------------------------------------------------
# well-conditioned input selection (random-weight files)
# ---------------------------------------------------------------------------

N_CANDIDATES = 16  # candidate batches "input", "input.1", ..., "input.15"
N_KEEP = INPUT_SHAPE[0]  # items kept (the stored batch)
F32_TOL = 1e-4  # max f32-vs-f64 relative RMS error, per item and output
PERTURB = 1e-7  # relative size of the input perturbations of the f32 check (~1-2 ulp)
N_PERTURB = 4  # perturbed f32 runs per candidate (besides the unperturbed one)
CHECKED = ("logits", "saliency", "gradcam", "cam", "dream_grad")


def candidate_name(c):
    return "input" if c == 0 else f"input.{c}"


def candidate_order(label):
    """'input[1]' -> (0, 1), 'input.3[0]' -> (3, 0)."""
    stem, b = label[:-1].split("[")
    return (int(stem.split(".")[1]) if "." in stem else 0, int(b))


def rel_rms(got, want):
    """sqrt(sum (got-want)^2 / sum want^2), 0 when equal (tests/common rel_rms)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    num = float(np.sum((got - want) ** 2))
    if num == 0.0:
        return 0.0
    den = float(np.sum(want**2))
    return math.sqrt(num / den) if den > 0 else math.inf


def perturbed(x, label, t):
    """x * (1 + PERTURB*(2u-1)) in f32, u from the weight generator (name
    '<label>.perturb<t>'): a random relative change of about 1-2 f32 ulps."""
    u = nets.uniforms(f"{label}.perturb{t}", x.size).reshape(x.shape)
    return (x.astype(np.float64) * (1.0 + PERTURB * (2.0 * u - 1.0))).astype(np.float32)


def f32_errors(ev, P32, x, ref, labels):
    """Per-item f32-vs-f64 relative RMS error of every checked output.

    Runs the same model with x64 off: f32 weights (the stored ones), f32
    arithmetic throughout, the reference's classes. The f32 input is x itself
    and N_PERTURB copies of it perturbed by ~PERTURB relative (see perturbed);
    each output's error is the largest over these runs, all compared with the
    float64 outputs at x. Returns [{output: err} for each item]."""
    xs = [x] + [np.stack([perturbed(x[b], labels[b], t) for b in range(x.shape[0])])
                for t in range(1, N_PERTURB + 1)]
    errs = [{k: 0.0 for k in CHECKED if k in ref} for _ in range(x.shape[0])]
    with jax.enable_x64(False):
        P32 = {n: jnp.asarray(v, dtype=jnp.float32) for n, v in P32.items()}
        for xi in xs:
            out32, _ = ev(P32, jnp.asarray(xi, dtype=jnp.float32), ref["cls"])
            for b, e in enumerate(errs):
                for k in e:
                    e[k] = max(e[k], rel_rms(out32[k][b], ref[k][b]))
    return errs


def select_input(ev, P, P32, seed):
    """Pick the first N_KEEP well-conditioned candidate items.

    Candidate batch c is generated exactly like the original input, from the
    generator name candidate_name(c); its items are tried in order
    (input[0], input[1], input.1[0], input.1[1], ...). An item is kept when
    every checked output agrees between float32 and float64 to F32_TOL.
    Returns x, the f64 outputs for x, shapes, the kept names, their errors
    and the rejected items' errors."""
    kept, rejected = [], []  # (label, item array, errs)
    first = None
    for c in range(N_CANDIDATES):
        xc = random_input(seed, candidate_name(c))
        ref, shapes = ev(P, jnp.asarray(xc, dtype=jnp.float64))
        if c == 0:
            first = (ref, shapes)
        labels = [f"{candidate_name(c)}[{b}]" for b in range(xc.shape[0])]
        for label, b, e in zip(labels, range(xc.shape[0]), f32_errors(ev, P32, xc, ref, labels)):
            worst = max(e.values())
            print(f"   candidate {label}: worst f32 error {worst:.1e} ({max(e, key=e.get)})"
                  + ("" if worst < F32_TOL else "  -> rejected"))
            (kept if worst < F32_TOL else rejected).append((label, xc[b], e))
            if len(kept) == N_KEEP:
                break
        if len(kept) == N_KEEP:
            break
    if len(kept) < N_KEEP:
        # no luck: fill up with the least ill-conditioned rejects, and say so
        fill = sorted(rejected, key=lambda r: max(r[2].values()))[: N_KEEP - len(kept)]
        print(f"   WARNING: only {len(kept)} well-conditioned items among {2 * N_CANDIDATES}; "
              f"using {[r[0] for r in fill]} anyway")
        fill_names = {r[0] for r in fill}
        kept = sorted(kept + fill, key=lambda r: candidate_order(r[0]))
        rejected = [r for r in rejected if r[0] not in fill_names]
    names = [k[0] for k in kept]
    x = np.stack([k[1] for k in kept])
    if names == [f"input[{b}]" for b in range(N_KEEP)]:
        out, shapes = first  # the original input: reuse its reference
        errs = [k[2] for k in kept]
    else:
        # recompute on the stored batch itself (items are independent, so this
        # only re-measures what was checked above)
        out, shapes = ev(P, jnp.asarray(x, dtype=jnp.float64))
        errs = f32_errors(ev, P32, x, out, names)
    return x, out, shapes, names, errs, rejected


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


def fmt_errs(errs):
    return {k: float(f"{v:.2e}") for k, v in errs.items()}


def make_random(name, seed=nets.SEED):
    arch, pfn, fwd, gc, cam, dream = nets.SPECS[name]
    t0 = time.time()
    spec = pfn()
    P, raw = nets.make_params(spec, seed)
    P32 = {n: v for n, v in raw.items() if not n.endswith("num_batches_tracked")}
    ev = Evaluator(fwd, gc, cam, dream)
    x, out, shapes, names, errs, rejected = select_input(ev, P, P32, seed)
    ill = [n for n, e in zip(names, errs) if max(e.values()) >= F32_TOL]
    meta = base_meta(name, arch, spec, gc, cam, dream)
    meta.update(
        seed=str(seed),
        input=(
            f"uniforms(name) -> (2u-1)*{INPUT_SCALE}, shape {list(INPUT_SHAPE)}, for name = "
            f"'input', 'input.1', ..., 'input.{N_CANDIDATES - 1}'; x = the first {N_KEEP} items "
            f"(in that order) whose float32 outputs match float64 to relative RMS < {F32_TOL:g} "
            "(see input_names, f32_check)"
        ),
        input_names=json.dumps(names),
        f32_check=json.dumps(
            {
                "tolerance": F32_TOL,
                "metric": (f"per-item relative RMS, JAX float32 (x64 off, f32 weights) vs float64; max over the "
                           f"input and {N_PERTURB} copies perturbed by {PERTURB:g} relative"),
                "kept": {n: fmt_errs(e) for n, e in zip(names, errs)},
                "rejected": {n: fmt_errs(e) for n, _, e in rejected},
                **({"ill_conditioned_kept": ill} if ill else {}),
            }
        ),
        dtype_note="computed in float64 (weights rounded to f32 then upcast); stored as f32",
    )
    path = os.path.join(OUT_DIR, f"{name}.safetensors")
    size = write(path, x, out, meta)
    report(name, path, size, out, shapes, gc, cam, dream, time.time() - t0)
    print(f"   inputs {names}; rejected {[n for n, _, _ in rejected]}")


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
