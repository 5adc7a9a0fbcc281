#!/usr/bin/env python3
"""PyTorch's side of the per-method comparison (scripts/bench_methods.sh): each attribution
method as captum / pytorch-grad-cam users run it, on the same .safetensors model as deepviz.

    python3 scripts/bench_methods_torch.py MODEL METHOD BATCH [ITERS] [WARMUP]
    python3 scripts/bench_methods_torch.py MODEL --input IMAGE OUT.npy
    python3 scripts/bench_methods_torch.py MODEL METHOD --check X.npy DEEPVIZ_MAPS.npy

METHOD (deepviz's names): saliency, ig, smoothgrad (captum 0.9: Saliency then max over
channels; IntegratedGradients, n_steps=50, zero baseline, 50 inputs per forward; NoiseTunnel
'smoothgrad' around Saliency, 50 samples, stdev 0.15 x (max - min) of the batch, ~50 inputs
per forward, then max over channels) and gradcam, gradcampp, xgradcam, layercam, eigencam,
scorecam, ablationcam (pytorch-grad-cam's classes, targets=None: each item's top class).
target_layers = deepviz's default layer (src/zoo `gradcam_layer`): `layer4` for resnet50, the
head's activation `_swish` for efficientnet_lite0. That package's one `_swish` module runs after
the stem and after the head, so pytorch-grad-cam would hook the stem's call (its first) and
AblationCAM would swap out both; the head gets its own ReLU6 here (logits unchanged: checked).
ScoreCAM's `batch_size` and AblationCAM's are set to deepviz's DEFAULT_MASKS (32 masked inputs
per forward; pytorch-grad-cam's ScoreCAM would use 16, its AblationCAM uses 32).

The model is as a user loads it: eval mode, parameters requiring grad (pytorch-grad-cam's
backward then also computes the weights' gradients, as it does for its users). captum's targets
(each item's top class) are computed once before timing.

Timing: the input is the fixed pseudo-random batch of scripts/bench_cpu_torch.py (and of
examples/bench_cpu.rs), threads = $TORCH_THREADS (default 2); WARMUP calls (default 2), then
ITERS (default 5). Prints one JSON line: median, min and max ms per call, images_per_s.
--input: IMAGE resized (shorter side), centre-cropped and normalised as deepviz does, as a
[1, 3, H, W] float32 .npy. --check: the method's maps of X.npy here against deepviz's raw maps
(`deepviz METHOD --image X.npy --raw`), after pytorch-grad-cam's scaling for the CAMs (ReLU,
min-max, resize to the input, min-max) and relative to the largest value for the gradient
methods; prints one JSON line (max_abs_diff; for Score-CAM also with align_corners=False).
"""
import copy
import json
import os
import sys
import time
import types
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")  # ScoreCAM / AblationCAM's progress bars
warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")  # captum's, every call

import numpy as np
import torch
from bench_cpu_torch import build

DEFAULT_MASKS = 32  # src/viz/scorecam.rs
CAMS = {"gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "layercam": "LayerCAM",
        "eigencam": "EigenCAM", "scorecam": "ScoreCAM", "ablationcam": "AblationCAM"}


def own_head_activation(model):
    """Give efficientnet_lite_pytorch's head its own activation module; returns it."""
    model.add_module("_swish_head", copy.deepcopy(model._swish))

    def extract_features(self, inputs):
        x = self._swish(self._bn0(self._conv_stem(inputs)))
        for block in self._blocks:
            x = block(x)  # drop-connect is off in eval mode
        return self._swish_head(self._bn1(self._conv_head(x)))

    model.extract_features = types.MethodType(extract_features, model)
    return model._swish_head


def load(path):
    arch, model, layer, size = build(path)
    for p in model.parameters():
        p.requires_grad_(True)
    if layer == "_swish":
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            before = model(x)
            target = own_head_activation(model)
            assert torch.equal(before, model(x)), "the separate head activation changed the logits"
    else:
        target = dict(model.named_modules())[layer]
    return arch, model, target, size


def method(name, model, target_layer, batch):
    """A function of the input batch returning maps [n, h, w] (numpy)."""
    if name in CAMS:
        import pytorch_grad_cam

        cam = getattr(pytorch_grad_cam, CAMS[name])(model=model, target_layers=[target_layer])
        if name in ("scorecam", "ablationcam"):
            cam.batch_size = DEFAULT_MASKS
        return lambda x: cam(input_tensor=x, targets=None)
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

    state = {}

    def top(x):  # captum's targets, fixed before timing
        if state.get("x") is not x:
            with torch.no_grad():
                state["x"], state["t"] = x, model(x).argmax(1)
        return state["t"]

    if name == "saliency":
        sal = Saliency(model)
        return lambda x: sal.attribute(x, target=top(x)).amax(1).numpy()
    if name == "ig":
        ig = IntegratedGradients(model)
        return lambda x: ig.attribute(x, target=top(x), n_steps=50, internal_batch_size=50).sum(1).detach().numpy()
    if name == "smoothgrad":
        nt = NoiseTunnel(Saliency(model))
        return lambda x: nt.attribute(x, target=top(x), nt_type="smoothgrad", nt_samples=50, nt_samples_batch_size=max(1, 50 // x.shape[0]),
                                      stdevs=0.15 * float(x.max() - x.min())).amax(1).numpy()
    sys.exit(f"unknown method {name}; known: saliency, ig, smoothgrad, {', '.join(CAMS)}")


def pgc_scaled(maps, size):
    """pytorch-grad-cam's output from raw maps [n, h, w]: ReLU, min-max, resize, min-max."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    return scale_cam_image(scale_cam_image(np.maximum(maps, 0), (size, size)))


def check(path, name, x_path, maps_path):
    arch, model, target_layer, size = load(path)
    x = torch.from_numpy(np.load(x_path))
    ours = np.load(maps_path)
    ours = ours.reshape(x.shape[0], *ours.shape[-2:])
    result = {"model": arch, "method": name}

    def compare(theirs):
        if name in CAMS:
            return float(np.abs(pgc_scaled(ours, size) - theirs).max())
        return float(np.abs(ours - theirs).max() / np.abs(theirs).max())

    f = method(name, model, target_layer, x.shape[0])
    torch.manual_seed(0)
    theirs = f(x)
    result["max_abs_diff"] = compare(theirs)
    if name == "eigencam":  # the SVD's sign is arbitrary; deepviz orients it
        result["max_abs_diff_flipped"] = float(np.abs(pgc_scaled(-ours, size) - theirs).max())
    if name == "smoothgrad":  # different noise: only alike
        result["pearson"] = float(np.corrcoef(ours.ravel(), theirs.ravel())[0, 1])
    if name == "scorecam":  # deepviz's upsampling of the masks: align_corners=False
        up = torch.nn.UpsamplingBilinear2d
        torch.nn.UpsamplingBilinear2d = lambda size: torch.nn.Upsample(size=size, mode="bilinear", align_corners=False)
        try:
            result["max_abs_diff_align_corners_false"] = compare(method(name, model, target_layer, x.shape[0])(x))
        finally:
            torch.nn.UpsamplingBilinear2d = up
    print(json.dumps(result))


def write_input(path, image, out):
    from PIL import Image
    from safetensors import safe_open
    from torchvision import transforms as T

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    size = int(float(meta.get("input_size", "224").split(",")[0]))
    mean = [float(v) for v in meta.get("mean", "0.485,0.456,0.406").split(",")]
    std = [float(v) for v in meta.get("std", "0.229,0.224,0.225").split(",")]
    pre = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
    np.save(out, pre(Image.open(image).convert("RGB"))[None].numpy().astype(np.float32))


def main():
    a = sys.argv[1:]
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", os.environ.get("RAYON_NUM_THREADS", "2"))))
    if len(a) == 4 and a[1] == "--input":
        return write_input(a[0], a[2], a[3])
    if len(a) == 5 and a[2] == "--check":
        return check(a[0], a[1], a[3], a[4])
    if len(a) < 3:
        sys.exit(__doc__)
    path, name, batch = a[0], a[1], int(a[2])
    iters, warmup = (int(a[3]) if len(a) > 3 else 5), (int(a[4]) if len(a) > 4 else 2)
    arch, model, target_layer, size = load(path)
    n = batch * 3 * size * size
    x = ((torch.arange(n, dtype=torch.int64) * 7919 % 1000).float() / 500.0 - 1.0).reshape(batch, 3, size, size)
    f = method(name, model, target_layer, batch)
    for _ in range(warmup):
        f(x)
    ms = []
    for _ in range(iters):
        t = time.perf_counter()
        f(x)
        ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    med = ms[len(ms) // 2]
    from importlib.metadata import version

    print(json.dumps({"engine": "torch-cpu", "torch": torch.__version__, "grad_cam": version("grad-cam"), "captum": version("captum"), "model": arch, "job": name, "batch": batch,
                      "threads": torch.get_num_threads(), "median_ms": round(med, 2), "min_ms": round(ms[0], 2),
                      "max_ms": round(ms[-1], 2), "images_per_s": round(batch * 1e3 / med, 4)}))


if __name__ == "__main__":
    main()
