#!/usr/bin/env python3
"""PyTorch forward-hook references for deepviz's layer names (tests/fixtures/hooks/).

For each zoo family (all with batch norms, and two without), build the PyTorch model itself
(torchvision, timm, efficientnet_lite_pytorch) with the golden fixtures' deterministic random
weights (weights.py: the same values tests/common/st.rs builds), hook chosen modules by their
module path, and record on a seeded input:

  act:<path>   the module's output, as a forward hook sees it when called (copied there, before
               an in-place ReLU can change it; for a module called more than once, e.g.
               torchvision's reused `relu`: the last call)
  grad:<path>  d logits[b, cls_b] / d act, summed over the batch (a tensor hook on that output)

plus `x` and, in the metadata, `layers` (JSON list of the paths) and `cls` (argmax of each
item's logits). tests/layers.rs checks that deepviz's engine gives the same at the same names.

  python3 scripts/golden/make_hooks.py            # all fixtures
  python3 scripts/golden/make_hooks.py resnet18   # some

Needs torch, torchvision, timm, efficientnet_lite_pytorch and safetensors (CPU only);
scripts/torch_cpu_env.sh makes such a virtual environment (.toolchain/torch) without the CUDA
libraries: .toolchain/torch/bin/python scripts/golden/make_hooks.py
"""

import json
import os
import sys

import numpy as np
import torch
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from weights import init_tensor, uniforms  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_DIR = os.path.join(REPO, "tests", "fixtures", "hooks")
# one image, small: the fixtures stay small (full-resolution early layers are the big ones);
# AlexNet's pooling needs at least 63 pixels; the efficientnet_lite_pytorch model is built for a
# square input size
SHAPE = (1, 3, 40, 48)
SHAPES = {"alexnet": (1, 3, 64, 64), "efficientnet_lite0_pkg": (1, 3, 48, 48)}


def torchvision_model(name):
    import torchvision.models as tvm

    if name == "googlenet":
        return tvm.googlenet(weights=None, aux_logits=False, init_weights=False, transform_input=False)
    return getattr(tvm, name)(weights=None)


def timm_lite0():
    import timm

    return timm.create_model("efficientnet_lite0", pretrained=False)


def pkg_lite0():
    from efficientnet_lite_pytorch import EfficientNet

    # its "SAME" padding is static, computed for `image_size`: at the input size it equals TF's
    # (and deepviz's) dynamic SAME padding
    return EfficientNet.from_name("efficientnet-lite0", image_size=SHAPES["efficientnet_lite0_pkg"][2])


# fixture name: (model factory, module paths to hook). The paths mix convolutions that a batch
# norm follows, those batch norms, activations and containers.
MODELS = {
    "resnet18": (lambda: torchvision_model("resnet18"),
                 ["conv1", "bn1", "layer1.0.conv1", "layer2.0.downsample.0", "layer2.0.downsample.1",
                  "layer3.1.conv2", "layer3.1.bn2", "layer3", "layer4.1.relu"]),
    "vgg11_bn": (lambda: torchvision_model("vgg11_bn"),
                 ["features.4", "features.5", "features.25", "features.26", "features.27"]),
    "googlenet": (lambda: torchvision_model("googlenet"),
                  ["conv1.conv", "conv1.bn", "conv1", "inception3a.branch2.1.conv", "inception3a.branch2.1.bn",
                   "inception4c", "inception5b.branch4.1.conv"]),
    "mobilenet_v2": (lambda: torchvision_model("mobilenet_v2"),
                     ["features.0.0", "features.0.1", "features.0", "features.3.conv.0.0", "features.3.conv.2",
                      "features.3.conv.3", "features.3", "features.18.0"]),
    "efficientnet_lite0": (timm_lite0,
                           ["conv_stem", "bn1", "blocks.1.0.conv_pw", "blocks.1.0.bn1", "blocks.5.0.conv_pwl",
                            "blocks.5.0.bn3", "conv_head", "bn2"]),
    "efficientnet_lite0_pkg": (pkg_lite0,
                               ["_conv_stem", "_bn0", "_blocks.3._expand_conv", "_blocks.3._bn0",
                                "_blocks.10._project_conv", "_blocks.10._bn2", "_conv_head", "_bn1"]),
    "alexnet": (lambda: torchvision_model("alexnet"), ["features.0", "features.1", "features.10"]),
    "squeezenet1_1": (lambda: torchvision_model("squeezenet1_1"),
                      ["features.0", "features.3.squeeze", "features.3", "features.12"]),
}


def make(name):
    factory, paths = MODELS[name]
    torch.manual_seed(0)
    model = factory().eval()
    state = {k: torch.from_numpy(init_tensor(k, list(v.shape))) for k, v in model.state_dict().items()}
    model.load_state_dict(state, strict=True)

    shape = SHAPES.get(name, SHAPE)
    u = uniforms("hooks input", int(np.prod(shape)))
    x = ((2.0 * u - 1.0) * 1.5).astype(np.float32).reshape(shape)
    acts, grads, last = {}, {}, {}
    modules = dict(model.named_modules())

    def hook(path):
        def fwd(_m, _inp, out):
            # a copy: an in-place op after the module (torchvision's ReLU(inplace=True)) would
            # change the tensor itself. The last call wins, as deepviz names it.
            acts[path] = out.detach().clone()
            last[path] = out

            def bwd(g):
                if last[path] is out:
                    grads[path] = g.detach().clone()

            out.register_hook(bwd)

        return fwd

    for p in paths:
        modules[p].register_forward_hook(hook(p))
    logits = model(torch.from_numpy(x))
    cls = logits.argmax(dim=1)
    logits.gather(1, cls[:, None]).sum().backward()

    tensors = {"x": x}
    for p in paths:
        tensors[f"act:{p}"] = acts[p].detach().numpy().astype(np.float32)
        tensors[f"grad:{p}"] = grads[p].numpy().astype(np.float32)
    import torchvision

    meta = {
        "model": name,
        "layers": json.dumps(paths),
        "cls": json.dumps([int(c) for c in cls]),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "made_by": "scripts/golden/make_hooks.py",
    }
    os.makedirs(OUT_DIR, exist_ok=True)
    out = os.path.join(OUT_DIR, f"{name}.safetensors")
    save_file(tensors, out, metadata=meta)
    print(f"{out}: {len(paths)} layers, cls {meta['cls']}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    for name in sys.argv[1:] or MODELS:
        make(name)
