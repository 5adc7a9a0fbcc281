#!/usr/bin/env python3
"""ONNX fixtures for tests/onnx.rs: small CNNs the zoo does not have, exported with
torch.onnx.export, and PyTorch's answers on them (tests/fixtures/onnx/).

  NAME.onnx            the exported model (random weights, random batch-norm statistics)
  NAME.safetensors     x [3, 3, 37, 29]; logits; saliency = max_c |d logit_t / d x| [3, 37, 29];
                       gradcam = ReLU(sum_k mean_hw(d logit_t / d A_k) A_k) at the metadata's
                       `gradcam_layer` (a forward hook on that module); metadata: gradcam_layer,
                       targets (one class per item), modules (the Conv2d / Linear module paths)

The references are computed in float64 from the same float32 weights the .onnx file holds, so
they stand for the exact answer; deepviz computes in float32.

Models:
  small_cnn   conv (non-square padding) + BatchNorm kept as its own ONNX node (exported
              without constant folding, with a dynamic batch: the flatten is Shape → Gather →
              Unsqueeze → Concat → Reshape), an asymmetrically padded conv (F.pad folded into
              the Conv's pads after export, as tf2onnx writes them), dilation, ReLU6, SiLU,
              Hardswish (opset 13: x * HardSigmoid(x)), a HardSigmoid squeeze-excitation, LRN,
              max / average pooling with ceil_mode and count_include_pad=False, MatMul + Add, a
              final Softmax (dropped by deepviz)
  resnext     ResNeXt-style bottlenecks (grouped 3x3, cardinality 4) with a sigmoid
              squeeze-excitation and a strided projection shortcut; batch norms folded by the
              exporter (its default); torch.flatten → Flatten; Linear → Gemm
  convnext    ConvNeXt-style blocks: depthwise 7x7 → BatchNorm (for LayerNorm) → pointwise
              1x1 (4x) → Hardswish → pointwise 1x1 → layer scale (Mul by a constant) →
              residual; patchify stem 4x4 / 4; x.mean((2, 3)) head
  convnext_ln the same block with a real channels-last LayerNorm: deepviz refuses it (the
              error lists the unsupported operators); only the .onnx file is kept

Run with the CPU PyTorch environment of scripts/torch_cpu_env.sh, which also installs the
`onnx` package torch.onnx.export needs:
  .toolchain/torch/bin/python scripts/golden/make_onnx.py
"""

import json
import os

import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "tests", "fixtures", "onnx")
H, W, N, CLASSES = 37, 29, 3, 10


class LrnFn(torch.autograd.Function):
    """nn.LocalResponseNorm exports as a dozen ops; this exports it as one ONNX LRN node."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        return F.local_response_norm(x, size, alpha, beta, k)

    @staticmethod
    def symbolic(g, x, size, alpha, beta, k):
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


class Lrn(nn.Module):
    def __init__(self, size, alpha, beta, k):
        super().__init__()
        self.args = (size, alpha, beta, k)

    def forward(self, x):
        if torch.onnx.is_in_onnx_export():
            return LrnFn.apply(x, *self.args)
        return F.local_response_norm(x, *self.args)


class HsigSE(nn.Module):
    def __init__(self, c, r):
        super().__init__()
        self.fc1 = nn.Conv2d(c, r, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(r, c, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.relu(self.fc1(s))))


class SmallCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=(1, 2))
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 12, (3, 2), bias=False)  # after F.pad(0, 1, 1, 0): asymmetric
        self.act2 = nn.ReLU6()
        self.pool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.lrn = Lrn(5, 1e-2, 0.75, 2.0)
        self.conv3 = nn.Conv2d(12, 12, 3, padding=2, dilation=2)
        self.act3 = nn.SiLU()
        self.conv4 = nn.Conv2d(12, 16, 3, padding=1, groups=4)
        self.act4 = nn.Hardswish()
        self.se = HsigSE(16, 4)
        self.avg = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
        self.fc1 = nn.Linear(16 * 6 * 5, 24)  # 37x29 → 6x5 here
        self.relu2 = nn.ReLU()
        self.w2 = nn.Parameter(torch.randn(24, CLASSES) * 0.3)
        self.b2 = nn.Parameter(torch.randn(CLASSES) * 0.1)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.act2(self.conv2(F.pad(x, (0, 1, 1, 0))))
        x = self.lrn(self.pool(x))
        x = self.act3(self.conv3(x))
        x = self.se(self.act4(self.conv4(x)))
        x = self.avg(x)
        x = x.view(x.size(0), -1)
        x = self.relu2(self.fc1(x))
        return torch.softmax(x @ self.w2 + self.b2, 1)


class SE(nn.Module):
    def __init__(self, c, r):
        super().__init__()
        self.fc1 = nn.Conv2d(c, r, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(r, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(self.relu(self.fc1(s))))


class NeXtBlock(nn.Module):
    def __init__(self, cin, width, cout, stride, groups=4):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.se = SE(cout, 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idn = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.se(self.bn3(self.conv3(y)))
        return self.relu(y + idn)


class ResNeXt(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 5, 2, 2, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(NeXtBlock(8, 8, 16, 1), NeXtBlock(16, 8, 16, 1))
        self.layer2 = nn.Sequential(NeXtBlock(16, 16, 24, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, CLASSES)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ChannelsLastLN(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln = nn.LayerNorm(c)

    def forward(self, x):
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class NeXtBlock2(nn.Module):
    def __init__(self, c, ln):
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = ChannelsLastLN(c) if ln else nn.BatchNorm2d(c)
        self.pwconv1 = nn.Conv2d(c, 4 * c, 1)
        self.act = nn.Hardswish()
        self.pwconv2 = nn.Conv2d(4 * c, c, 1)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x):
        y = self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))
        return x + y * self.gamma.view(1, -1, 1, 1)


class ConvNeXt(nn.Module):
    def __init__(self, ln=False):
        super().__init__()
        norm = (lambda c: ChannelsLastLN(c)) if ln else nn.BatchNorm2d
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 4, 4), norm(8))
        self.stages = nn.Sequential(
            nn.Sequential(NeXtBlock2(8, ln), NeXtBlock2(8, ln)),
            nn.Sequential(norm(8), nn.Conv2d(8, 16, 2, 2)),
            nn.Sequential(NeXtBlock2(16, ln)),
        )
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


def randomise(m, g):
    """Random weights and batch-norm statistics, so folding a batch norm matters."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            fan = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) / fan**0.5 if p.dim() > 1 else torch.randn(p.shape, generator=g) * 0.2)
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.2)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
    return m.eval()


def fold_pads(path, pads):
    """Fold the one zero Pad (F.pad) into the Conv it feeds, as tf2onnx writes asymmetric
    'SAME' padding: a Conv with pads [top, left, bottom, right]. The exporter computes the Pad's
    amounts with a chain of shape ops; `pads` is what they come to, and the chain is dropped."""
    model = onnx.load(path)
    g = model.graph
    (pad,) = [n for n in g.node if n.op_type == "Pad"]
    (conv,) = [n for n in g.node if pad.output[0] in n.input]
    assert conv.op_type == "Conv"
    attr = [a for a in conv.attribute if a.name == "pads"][0]
    assert list(attr.ints) == [0, 0, 0, 0]
    del attr.ints[:]
    attr.ints.extend(pads)
    conv.input[0] = pad.input[0]
    g.node.remove(pad)
    while True:  # drop what fed only the Pad
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def export(name, m, **kw):
    path = os.path.join(OUT, name + ".onnx")
    x = torch.zeros(1, 3, H, W)
    torch.onnx.export(m, x, path, dynamo=False, input_names=["input"], output_names=["scores"], **kw)
    return path


def references(m, layer, targets, g):
    """Logits, saliency and Grad-CAM in float64 (the hooked module: `layer`)."""
    m = m.double()
    x = torch.randn(N, 3, H, W, generator=g, dtype=torch.float64)
    acts = {}
    mod = dict(m.named_modules())[layer]
    mod.register_forward_hook(lambda _m, _i, out: acts.setdefault("a", out))
    xr = x.clone().requires_grad_(True)
    logits = pre_softmax(m, xr)  # deepviz drops a final softmax: the methods explain the scores
    a = acts["a"]
    score = logits[torch.arange(N), torch.tensor(targets)].sum()
    gx, ga = torch.autograd.grad(score, [xr, a])
    saliency = gx.abs().amax(1)
    alpha = ga.mean((2, 3), keepdim=True)
    gradcam = F.relu((alpha * a).sum(1))
    return {"x": x.float(), "logits": logits.detach().float(), "saliency": saliency.float(), "gradcam": gradcam.float()}


def pre_softmax(m, x):
    """m(x) with torch.softmax made the identity (SmallCnn ends in one)."""
    saved = torch.softmax
    torch.softmax = lambda t, dim: t
    try:
        return m(x)
    finally:
        torch.softmax = saved


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(20261203)
    models = {
        "small_cnn": (SmallCnn(), "se", dict(opset_version=13, training=torch.onnx.TrainingMode.PRESERVE, dynamic_axes={"input": {0: "batch"}})),
        "resnext": (ResNeXt(), "layer2", dict(opset_version=17)),
        "convnext": (ConvNeXt(), "stages.2", dict(opset_version=18)),
    }
    for name, (m, layer, kw) in models.items():
        randomise(m, g)
        path = export(name, m, **kw)
        if name == "small_cnn":
            fold_pads(path, [1, 0, 0, 1])  # F.pad(x, (0, 1, 1, 0)): top 1, right 1
        targets = [1, 7, 4]
        ref = references(m, layer, targets, g)
        modules = [k for k, v in m.named_modules() if isinstance(v, (nn.Conv2d, nn.Linear))]
        meta = {"gradcam_layer": layer, "targets": json.dumps(targets), "modules": json.dumps(modules)}
        save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(OUT, name + ".safetensors"), metadata=meta)
        print(f"{name}: {os.path.getsize(path)} bytes onnx, logits {ref['logits'][0, :3].tolist()}")
    m = randomise(ConvNeXt(ln=True), g)
    export("convnext_ln", m, opset_version=18)
    print("convnext_ln: exported (deepviz refuses its LayerNormalization)")


if __name__ == "__main__":
    main()
