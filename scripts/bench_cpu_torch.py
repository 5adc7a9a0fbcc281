#!/usr/bin/env python3
"""PyTorch's side of the CPU comparison (scripts/bench_cpu.sh): time one job the way
examples/bench_cpu.rs times deepviz's, on the same .safetensors model and the same input.

    python3 scripts/bench_cpu_torch.py MODEL.safetensors saliency|gradcam BATCH [ITERS]

saliency: the gradient of each item's top logit w.r.t. the input (torch.autograd.grad, which
computes no weight gradients, as captum's Saliency), then max |.| over channels.
gradcam: a forward hook at the architecture's default Grad-CAM layer, the gradient of the top
logits there, alpha = spatial mean, ReLU(sum alpha * A), as pytorch-grad-cam computes it.
Threads: torch.set_num_threads($TORCH_THREADS or $RAYON_NUM_THREADS, default 2). Prints one
JSON line (median, min, max ms per call over ITERS calls after 2 warm-ups).
"""
import json
import os
import sys
import time

import torch
from safetensors import safe_open
from safetensors.torch import load_file

# deepviz's default Grad-CAM layer per architecture (src/zoo: Heads::gradcam_layer)
GRADCAM = {"resnet50": "layer4", "resnet18": "layer4", "efficientnet_lite0": "_bn1", "vgg16": "features.29"}


def build(path):
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    arch = meta["arch"]
    sd = load_file(path)
    if arch == "efficientnet_lite0" and "_conv_stem.weight" in sd:
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name("efficientnet-lite0")
        layer = "_swish"  # the head's activation (deepviz: `_swish`)
    elif arch.startswith("efficientnet") or arch.startswith("tf_efficientnet"):
        import timm

        model = timm.create_model(arch, pretrained=False)
        layer = "bn2"
    else:
        import torchvision

        model = torchvision.models.get_model(arch, weights=None)
        layer = GRADCAM.get(arch, "layer4")
    model.load_state_dict(sd, strict=False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    size = int(float(meta.get("input_size", "224").split(",")[0]))
    return arch, model, layer, size


def main():
    path, job, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    iters = int(sys.argv[4]) if len(sys.argv) > 4 else 7
    threads = int(os.environ.get("TORCH_THREADS", os.environ.get("RAYON_NUM_THREADS", "2")))
    torch.set_num_threads(threads)
    arch, model, layer, size = build(path)
    n = batch * 3 * size * size
    x0 = ((torch.arange(n, dtype=torch.int64) * 7919 % 1000).float() / 500.0 - 1.0).reshape(batch, 3, size, size)
    module = dict(model.named_modules())[layer]
    store = {}
    module.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))

    def saliency():
        x = x0.clone().requires_grad_(True)
        logits = model(x)
        score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
        (g,) = torch.autograd.grad(score, x)
        return g.abs().amax(1)

    def gradcam():
        with torch.enable_grad():
            logits = model(x0)
            score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
            (g,) = torch.autograd.grad(score, store["a"])
            alpha = g.mean((2, 3), keepdim=True)
            return torch.relu((alpha * store["a"]).sum(1))

    f = {"saliency": saliency, "gradcam": gradcam}[job]
    # Grad-CAM needs a graph from the hooked layer on (the weights are frozen and the input needs
    # no gradient): its output is made to require grad — at its last call, when the module is
    # called more than once per forward (the package's shared `_swish`)
    if job == "gradcam":
        calls = {"n": 0, "per_forward": 0}
        counter = module.register_forward_hook(lambda m, i, o: calls.__setitem__("per_forward", calls["per_forward"] + 1))
        with torch.no_grad():
            model(x0[:1])
        counter.remove()
        total = calls["per_forward"]

        def last_call(m, i, o):
            calls["n"] = calls["n"] % total + 1
            if calls["n"] == total:
                o.requires_grad_(True)

        module.register_forward_hook(last_call)
    for _ in range(2):
        f()
    ms = []
    for _ in range(iters):
        t = time.perf_counter()
        f()
        ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    print(json.dumps({"engine": "torch-cpu", "torch": torch.__version__, "model": arch, "job": job, "batch": batch, "threads": threads,
                      "median_ms": round(ms[len(ms) // 2], 2), "min_ms": round(ms[0], 2), "max_ms": round(ms[-1], 2)}))


if __name__ == "__main__":
    main()
