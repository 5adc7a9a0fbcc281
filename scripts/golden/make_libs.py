#!/usr/bin/env python3
"""captum and pytorch-grad-cam outputs for deepviz's attribution methods (tests/fixtures/libs/).

torchvision's resnet18 with the golden fixtures' deterministic random weights (weights.py: the
values tests/common/st.rs builds), in eval mode, on two real photos (samples/chelsea.png,
samples/coffee.png, preprocessed as deepviz's CLI does at 80x112: cover, bilinear, centre crop,
ImageNet mean/std). For each item the target is its top class. Every attribution is the
library's own call on that model and input; the tensors and their reductions are listed in
scripts/golden/README.md ("Library references"), which tests/libs.rs compares with deepviz's
methods on its CPU engine.

  LIBS=1 scripts/torch_cpu_env.sh                           # CPU torch + captum + grad-cam
  .toolchain/torch/bin/python scripts/golden/make_libs.py   # ~3 min on 2 busy cores

Needs torch 2.15, torchvision 0.29.2, captum 0.9.0, grad-cam 1.5.7 (with its ttach,
opencv-python-headless, scikit-learn, tqdm), pillow, safetensors. CPU only.
"""

import contextlib
import json
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from weights import init_tensor  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "tests", "fixtures", "libs", "resnet18.safetensors")
PHOTOS = ["samples/chelsea.png", "samples/coffee.png"]
SIZE = (80, 112)  # (h, w): layer3 is 5x7, layer4 3x4
SMALL = (40, 72)  # Score-CAM's input (512 masked forward passes per item): layer4 2x3
IG_STEPS = 32
SMOOTH_SAMPLES, SMOOTH_NOISE = 8, 0.15
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VERSIONS = {}


def resize_crop(img, th, tw):
    """deepviz's imageio::resize_crop: scale to cover (th, tw) keeping the aspect ratio (the
    other side truncated to an integer), PIL bilinear (antialiased), centre crop with the offset
    rounded half to even."""
    w, h = img.size
    if th * w >= tw * h:
        nh, nw = th, max(w * th // h, tw)
    else:
        nh, nw = max(h * tw // w, th), tw
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = round((nw - tw) / 2), round((nh - th) / 2)
    return img.crop((left, top, left + tw, top + th))


def load_photos(size):
    xs = []
    for p in PHOTOS:
        a = np.asarray(resize_crop(Image.open(os.path.join(REPO, p)).convert("RGB"), *size), dtype=np.float32) / 255.0
        xs.append(((a - np.float32(MEAN)) / np.float32(STD)).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(xs).astype(np.float32))


def model():
    import torchvision

    m = torchvision.models.resnet18(weights=None).eval()
    m.load_state_dict({k: torch.from_numpy(init_tensor(k, list(v.shape))) for k, v in m.state_dict().items()})
    # captum's backward hooks (guided backprop, deconvolution) refuse in-place ReLUs; out of
    # place is the same function
    for mod in m.modules():
        if isinstance(mod, torch.nn.ReLU):
            mod.inplace = False
    return m


def max_abs_c(t):
    return t.detach().abs().amax(dim=1).numpy()


def sum_c(t):
    return t.detach().sum(dim=1).numpy()


def captum_maps(m, x, cls, out, meta):
    from captum.attr import (Deconvolution, GuidedBackprop, GuidedGradCam, InputXGradient,
                             IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency)

    t = torch.from_numpy(x)
    target = torch.from_numpy(cls)
    out["captum/Saliency"] = max_abs_c(Saliency(m).attribute(t.clone(), target=target, abs=True))
    out["captum/InputXGradient"] = sum_c(InputXGradient(m).attribute(t.clone(), target=target))
    ig, delta = IntegratedGradients(m).attribute(t.clone(), baselines=0.0, target=target, n_steps=IG_STEPS,
                                                 method="gausslegendre", return_convergence_delta=True)
    out["captum/IntegratedGradients"] = sum_c(ig)
    meta["ig_convergence_delta"] = json.dumps([float(d) for d in delta])
    out["captum/GuidedBackprop"] = max_abs_c(GuidedBackprop(m).attribute(t.clone(), target=target))
    out["captum/Deconvolution"] = max_abs_c(Deconvolution(m).attribute(t.clone(), target=target))
    ggc = GuidedGradCam(m, m.layer4)
    out["captum/GuidedGradCam"] = max_abs_c(ggc.attribute(t.clone(), target=target))
    out["captum/GuidedGradCam.bilinear"] = max_abs_c(ggc.attribute(t.clone(), target=target, interpolate_mode="bilinear"))
    # SmoothGrad with deepviz's noise (module docs of smooth.rs: σ per item, its generator)
    noise, eps = deepviz_noise(x, SMOOTH_SAMPLES, SMOOTH_NOISE)
    meta["smoothgrad"] = json.dumps({"samples": SMOOTH_SAMPLES, "noise": SMOOTH_NOISE, "seed": 0,
                                     "eps_check": [[float(v) for v in e.ravel()[:4]] for e in eps[:2]]})
    for base, reduce, kw in [(InputXGradient, sum_c, {}), (Saliency, max_abs_c, {"abs": True})]:
        with given_noise(noise):
            a = NoiseTunnel(base(m)).attribute(t.clone(), nt_type="smoothgrad", nt_samples=SMOOTH_SAMPLES,
                                               stdevs=SMOOTH_NOISE, target=target, **kw)
        out[f"captum/NoiseTunnel.{base.__name__}"] = reduce(a)
    out["captum/LayerGradCam"] = LayerGradCam(m, m.layer4).attribute(t.clone(), target=target)[:, 0].detach().numpy()


def deepviz_normal(shape, seed):
    """deepviz's `Backend::random(shape, seed, Random::Normal)` (src/backend/cpu/generic.rs):
    SplitMix64 of seed + (counter + 1)·golden ratio, 53-bit uniforms in (0, 1), Box–Muller's
    cosine branch from counters 2i and 2i + 1, in f64, rounded once to f32."""
    n = int(np.prod(shape))
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + np.uint64(0x9E3779B97F4A7C15) * (np.arange(2 * n, dtype=np.uint64) + np.uint64(1))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = ((z >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    return (np.sqrt(-2.0 * np.log(u[0::2])) * np.cos(2.0 * np.pi * u[1::2])).astype(np.float32).reshape(shape)


def deepviz_noise(x, samples, level, seed=0):
    """What deepviz's SmoothGrad (src/viz/smooth.rs) adds to x: for sample s, the normal draw of
    seed (seed + s)·0x2545F4914F6CDD1D (mod 2^64) times σ = level·(max − min) of each item, in
    f32; laid out as captum's NoiseTunnel expands its input (`repeat_interleave`: item 0's
    samples, then item 1's)."""
    sigma = np.float32(level) * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    eps = [deepviz_normal(x.shape, ((seed + s) * 0x2545F4914F6CDD1D) % 2**64) for s in range(samples)]
    return np.stack([eps[s][i] * sigma[i] for i in range(x.shape[0]) for s in range(samples)]), eps


@contextlib.contextmanager
def given_noise(noise):
    """`torch.normal`, which captum's NoiseTunnel draws its noise with, returning `noise`."""
    keep = torch.normal

    def normal(mean, std):
        assert tuple(std.shape) == noise.shape, (tuple(std.shape), noise.shape)
        return torch.from_numpy(noise.copy())

    torch.normal = normal
    try:
        yield
    finally:
        torch.normal = keep


def with_raw(cam, x, targets, **kw):
    """The CAM's output (`cam(x, targets, **kw)`) and the per-layer maps its own `get_cam_image`
    returned inside `compute_cam_per_layer`, before `np.maximum(cam, 0)` and `scale_cam_image`
    (recorded by wrapping that method of the instance)."""
    raws = []
    inner = cam.get_cam_image

    def record(*a, **k):
        r = inner(*a, **k)
        raws.append(np.array(r, dtype=np.float32, copy=True))
        return r

    cam.get_cam_image = record
    final = cam(input_tensor=torch.from_numpy(x), targets=targets, **kw)
    cam.get_cam_image = inner
    return raws, np.asarray(final, dtype=np.float32)


@contextlib.contextmanager
def half_pixel_upsampling():
    """Score-CAM's `UpsamplingBilinear2d` (align_corners=True) swapped for
    `Upsample(mode="bilinear", align_corners=False)`, deepviz's resize, for the duration."""
    keep = torch.nn.UpsamplingBilinear2d
    torch.nn.UpsamplingBilinear2d = lambda size: torch.nn.Upsample(size=size, mode="bilinear", align_corners=False)
    try:
        yield
    finally:
        torch.nn.UpsamplingBilinear2d = keep


def gradcam_maps(m, x, xs, cls, cls_small, out):
    from pytorch_grad_cam import (AblationCAM, EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM,
                                  XGradCAM)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(int(c)) for c in cls]

    def put(name, cam, x=x, targets=targets, **kw):
        raws, final = with_raw(cam, x, targets, **kw)
        if len(raws) == 1:
            out[f"grad-cam/{name}.raw"] = raws[0]
        out[f"grad-cam/{name}"] = final

    l4 = [m.layer4]
    for name, cls_ in [("GradCAM", GradCAM), ("GradCAMPlusPlus", GradCAMPlusPlus), ("XGradCAM", XGradCAM),
                       ("LayerCAM", LayerCAM), ("EigenCAM", EigenCAM)]:
        put(name, cls_(m, l4))
    # at layer4 the gradient is the same at every position (only the average pool and fc
    # follow), so Grad-CAM and XGrad-CAM coincide there: layer3 tells the weightings apart
    for name, cls_ in [("GradCAM", GradCAM), ("GradCAMPlusPlus", GradCAMPlusPlus), ("XGradCAM", XGradCAM),
                       ("LayerCAM", LayerCAM)]:
        out[f"grad-cam/{name}.layer3.raw"] = with_raw(cls_(m, [m.layer3]), x, targets)[0][0]
    put("AblationCAM", AblationCAM(m, l4))
    put("GradCAM.eigen_smooth", GradCAM(m, l4), eigen_smooth=True)
    put("GradCAM.aug_smooth", GradCAM(m, l4), aug_smooth=True)
    put("GradCAM.layer3_layer4", GradCAM(m, [m.layer3, m.layer4]))
    small = [ClassifierOutputTarget(int(c)) for c in cls_small]
    put("ScoreCAM", ScoreCAM(m, l4), x=xs, targets=small)
    with half_pixel_upsampling():
        put("ScoreCAM.half_pixel", ScoreCAM(m, l4), x=xs, targets=small)


def main():
    import captum
    import pytorch_grad_cam  # noqa: F401
    import torchvision
    from importlib.metadata import version

    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    m = model()
    x, xs = load_photos(SIZE), load_photos(SMALL)
    with torch.no_grad():
        logits, logits_small = m(torch.from_numpy(x)), m(torch.from_numpy(xs))
    cls, cls_small = logits.argmax(1).numpy(), logits_small.argmax(1).numpy()
    out = {"x": x, "x_small": xs, "logits": logits.numpy()}
    meta = {
        "model": "resnet18 (torchvision), golden random weights (scripts/golden/weights.py), eval",
        "photos": json.dumps(PHOTOS),
        "preprocess": f"deepviz resize_crop to {SIZE} (x) and {SMALL} (x_small), /255, ImageNet mean/std",
        "cls": json.dumps([int(c) for c in cls]),
        "cls_small": json.dumps([int(c) for c in cls_small]),
        "ig_steps": str(IG_STEPS),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "captum": captum.__version__,
        "grad-cam": version("grad-cam"),
        "made_by": "scripts/golden/make_libs.py",
    }
    captum_maps(m, x, cls, out, meta)
    gradcam_maps(m, x, xs, cls, cls_small, out)
    out = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(out, OUT, metadata=meta)
    for k, v in sorted(out.items()):
        print(f"{k:40s} {list(v.shape)}  max|.| {np.abs(v).max():.4g}")
    print(f"{OUT}: {os.path.getsize(OUT)} bytes, cls {cls}, cls_small {cls_small}")


if __name__ == "__main__":
    main()
