"""JAX reference implementations of the CNNs deepviz supports.

Every model is a plain function ``forward(P, x, tap)`` where

* ``P`` maps PyTorch state-dict names (exactly as torchvision / timm /
  efficientnet_lite_pytorch name them) to float64 jax arrays,
* ``x`` is an NCHW float64 batch,
* ``tap(name, value) -> value`` is called with the output of every module
  deepviz may hook (name = PyTorch module path).  The golden generator uses it
  to record activations and to inject a zero "delta" whose gradient is the
  gradient w.r.t. that activation.

Semantics follow PyTorch eval mode (BatchNorm with running stats, dropout =
identity), written from the model sources of torchvision 0.29, timm 1.0 and
efficientnet_lite_pytorch 0.1.0 (read, not imported: PyTorch is not needed).

``SPECS[name]`` gives ``params()`` (list of (name, shape, dtype) in state-dict
order) and ``forward``.  ``make_params`` builds the deterministic random
weights described in README.md.
"""

import math

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

jax.config.update("jax_enable_x64", True)

from weights import SEED, fnv1a64, init_tensor, uniforms  # noqa: F401  (the generator, numpy only)


# ---------------------------------------------------------------------------
# deterministic weights (weights.py)
# ---------------------------------------------------------------------------


def make_params(spec, seed=SEED):
    """{name: float64 jax array} (f32-rounded values upcast) + raw dict."""
    raw = {n: init_tensor(n, s, seed) for n, s, _ in spec}
    return to_jax(raw), raw


def to_jax(raw):
    return {
        n: jnp.asarray(v.astype(np.float64))
        for n, v in raw.items()
        if not n.endswith("num_batches_tracked")
    }


# ---------------------------------------------------------------------------
# param spec helpers (state-dict order)
# ---------------------------------------------------------------------------


class Spec:
    def __init__(self):
        self.items = []

    def t(self, name, shape, dtype="F32"):
        self.items.append((name, list(shape), dtype))

    def conv(self, p, cout, cin, k, bias=False, groups=1):
        self.t(p + ".weight", [cout, cin // groups, k, k])
        if bias:
            self.t(p + ".bias", [cout])

    def bn(self, p, c):
        self.t(p + ".weight", [c])
        self.t(p + ".bias", [c])
        self.t(p + ".running_mean", [c])
        self.t(p + ".running_var", [c])
        self.t(p + ".num_batches_tracked", [], "I64")

    def linear(self, p, cout, cin):
        self.t(p + ".weight", [cout, cin])
        self.t(p + ".bias", [cout])


# ---------------------------------------------------------------------------
# ops (NCHW, float64)
# ---------------------------------------------------------------------------


def conv2d(x, w, b=None, stride=1, padding=0, groups=1):
    """padding: int (symmetric) or (top, bottom, left, right)."""
    if isinstance(padding, int):
        padding = (padding, padding, padding, padding)
    pt, pb, pl, pr = padding
    y = lax.conv_general_dilated(
        x,
        w,
        window_strides=(stride, stride),
        padding=[(pt, pb), (pl, pr)],
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
        feature_group_count=groups,
        precision=lax.Precision.HIGHEST,
    )
    if b is not None:
        y = y + b[None, :, None, None]
    return y


def conv(P, p, x, stride=1, padding=0, groups=1):
    return conv2d(x, P[p + ".weight"], P.get(p + ".bias"), stride, padding, groups)


def bn(P, p, x, eps):
    scale = P[p + ".weight"] / jnp.sqrt(P[p + ".running_var"] + eps)
    return (x - P[p + ".running_mean"][None, :, None, None]) * scale[None, :, None, None] + P[
        p + ".bias"
    ][None, :, None, None]


def relu(x):
    # gradient 0 at 0, like PyTorch's threshold_backward
    return jnp.where(x > 0, x, 0.0)


def relu6(x):
    # PyTorch ReLU6 = hardtanh(0, 6): gradient 0 at and outside both bounds
    return jnp.where(x <= 0, 0.0, jnp.where(x >= 6, 6.0, x))


def linear(P, p, x):
    return x @ P[p + ".weight"].T + P[p + ".bias"]


def _pool_out(n, k, s, p, ceil_mode):
    num = n + 2 * p - k
    if ceil_mode:
        o = -(-num // s) + 1
        if (o - 1) * s >= n + p:  # last window must start inside input/left pad
            o -= 1
    else:
        o = num // s + 1
    return o


def maxpool2d(x, k, s, p=0, ceil_mode=False):
    """torch.nn.MaxPool2d (padding acts as -inf)."""
    H, W = x.shape[2], x.shape[3]
    oh, ow = _pool_out(H, k, s, p, ceil_mode), _pool_out(W, k, s, p, ceil_mode)
    rh = (oh - 1) * s + k - H - p  # right/bottom pad (may be negative: crop)
    rw = (ow - 1) * s + k - W - p
    xp = lax.pad(x, -jnp.inf, [(0, 0, 0), (0, 0, 0), (p, rh, 0), (p, rw, 0)])
    y = lax.reduce_window(xp, -jnp.inf, lax.max, (1, 1, k, k), (1, 1, s, s), "VALID")
    assert y.shape[2:] == (oh, ow), (y.shape, oh, ow)
    return y


def _adaptive_matrix(n, o):
    m = np.zeros((o, n))
    for i in range(o):
        a = (i * n) // o
        b = -(-((i + 1) * n) // o)
        m[i, a:b] = 1.0 / (b - a)
    return jnp.asarray(m)


def adaptive_avg_pool2d(x, oh, ow):
    """torch AdaptiveAvgPool2d: window i = [floor(i*H/o), ceil((i+1)*H/o))."""
    mh = _adaptive_matrix(x.shape[2], oh)
    mw = _adaptive_matrix(x.shape[3], ow)
    return jnp.einsum("oh,bchw,pw->bcop", mh, x, mw, precision=lax.Precision.HIGHEST)


def gap(x):
    return jnp.mean(x, axis=(2, 3))


def same_pad(n, k, s):
    """TF 'SAME' (efficientnet_lite_pytorch Conv2dDynamicSamePadding)."""
    o = -(-n // s)
    total = max((o - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def no_tap(name, v):
    return v


# ---------------------------------------------------------------------------
# ResNet (torchvision)
# ---------------------------------------------------------------------------

RESNET = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet50": ("bottleneck", [3, 4, 6, 3])}


def resnet_params(name):
    kind, layers = RESNET[name]
    exp = 1 if kind == "basic" else 4
    S = Spec()
    S.conv("conv1", 64, 3, 7)
    S.bn("bn1", 64)
    inp = 64
    for li, (planes, n) in enumerate(zip([64, 128, 256, 512], layers)):
        stride = 1 if li == 0 else 2
        for bi in range(n):
            p = f"layer{li + 1}.{bi}"
            s = stride if bi == 0 else 1
            if kind == "basic":
                S.conv(p + ".conv1", planes, inp, 3)
                S.bn(p + ".bn1", planes)
                S.conv(p + ".conv2", planes, planes, 3)
                S.bn(p + ".bn2", planes)
            else:
                S.conv(p + ".conv1", planes, inp, 1)
                S.bn(p + ".bn1", planes)
                S.conv(p + ".conv2", planes, planes, 3)
                S.bn(p + ".bn2", planes)
                S.conv(p + ".conv3", planes * 4, planes, 1)
                S.bn(p + ".bn3", planes * 4)
            if bi == 0 and (s != 1 or inp != planes * exp):
                S.conv(p + ".downsample.0", planes * exp, inp, 1)
                S.bn(p + ".downsample.1", planes * exp)
            inp = planes * exp
    S.linear("fc", 1000, 512 * exp)
    return S.items


def resnet_forward(name):
    kind, layers = RESNET[name]
    eps = 1e-5

    def fwd(P, x, tap=no_tap):
        x = relu(bn(P, "bn1", conv(P, "conv1", x, 2, 3), eps))
        x = maxpool2d(x, 3, 2, 1)
        for li, n in enumerate(layers):
            for bi in range(n):
                p = f"layer{li + 1}.{bi}"
                s = 2 if (li > 0 and bi == 0) else 1
                idn = x
                if kind == "basic":
                    y = relu(bn(P, p + ".bn1", conv(P, p + ".conv1", x, s, 1), eps))
                    y = bn(P, p + ".bn2", conv(P, p + ".conv2", y, 1, 1), eps)
                else:
                    y = relu(bn(P, p + ".bn1", conv(P, p + ".conv1", x), eps))
                    y = relu(bn(P, p + ".bn2", conv(P, p + ".conv2", y, s, 1), eps))
                    y = bn(P, p + ".bn3", conv(P, p + ".conv3", y), eps)
                if p + ".downsample.0.weight" in P:
                    idn = bn(P, p + ".downsample.1", conv(P, p + ".downsample.0", x, s), eps)
                x = tap(p, relu(y + idn))
            x = tap(f"layer{li + 1}", x)
        x = tap("avgpool", adaptive_avg_pool2d(x, 1, 1)).reshape(x.shape[0], -1)
        return tap("fc", linear(P, "fc", x))

    return fwd


# ---------------------------------------------------------------------------
# VGG / AlexNet (torchvision)
# ---------------------------------------------------------------------------

VGG_A = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


def vgg_layers(batch_norm):
    """list of (kind, arg) per features index."""
    out, cin = [], 3
    for v in VGG_A:
        if v == "M":
            out.append(("maxpool", (2, 2, 0, False)))
        else:
            out.append(("conv", (cin, v, 3, 1, 1)))
            if batch_norm:
                out.append(("bn", v))
            out.append(("relu", None))
            cin = v
    return out


ALEX_FEATURES = [
    ("conv", (3, 64, 11, 4, 2)),
    ("relu", None),
    ("maxpool", (3, 2, 0, False)),
    ("conv", (64, 192, 5, 1, 2)),
    ("relu", None),
    ("maxpool", (3, 2, 0, False)),
    ("conv", (192, 384, 3, 1, 1)),
    ("relu", None),
    ("conv", (384, 256, 3, 1, 1)),
    ("relu", None),
    ("conv", (256, 256, 3, 1, 1)),
    ("relu", None),
    ("maxpool", (3, 2, 0, False)),
]


def seq_params(features, pool, hidden=4096, cls_idx=(0, 3, 6)):
    S = Spec()
    for i, (k, a) in enumerate(features):
        if k == "conv":
            S.conv(f"features.{i}", a[1], a[0], a[2], bias=True)
        elif k == "bn":
            S.bn(f"features.{i}", a)
    cin = 512 * pool * pool if pool == 7 else 256 * pool * pool
    S.linear(f"classifier.{cls_idx[0]}", hidden, cin)
    S.linear(f"classifier.{cls_idx[1]}", hidden, hidden)
    S.linear(f"classifier.{cls_idx[2]}", 1000, hidden)
    return S.items


def seq_forward(features, pool, cls_idx):
    def fwd(P, x, tap=no_tap):
        for i, (k, a) in enumerate(features):
            p = f"features.{i}"
            if k == "conv":
                x = conv(P, p, x, a[3], a[4])
            elif k == "bn":
                x = bn(P, p, x, 1e-5)
            elif k == "relu":
                x = relu(x)
            elif k == "maxpool":
                x = maxpool2d(x, *a)
            x = tap(p, x)
        x = tap("features", x)
        x = tap("avgpool", adaptive_avg_pool2d(x, pool, pool)).reshape(x.shape[0], -1)
        a, b, c = cls_idx
        x = relu(linear(P, f"classifier.{a}", x))
        x = relu(linear(P, f"classifier.{b}", x))
        return tap("classifier", linear(P, f"classifier.{c}", x))

    return fwd


# ---------------------------------------------------------------------------
# GoogLeNet (torchvision, transform_input=False, aux heads unused in eval)
# ---------------------------------------------------------------------------

INCEPTION = [
    ("inception3a", (192, 64, 96, 128, 16, 32, 32)),
    ("inception3b", (256, 128, 128, 192, 32, 96, 64)),
    ("maxpool3", None),
    ("inception4a", (480, 192, 96, 208, 16, 48, 64)),
    ("inception4b", (512, 160, 112, 224, 24, 64, 64)),
    ("inception4c", (512, 128, 128, 256, 24, 64, 64)),
    ("inception4d", (512, 112, 144, 288, 32, 64, 64)),
    ("inception4e", (528, 256, 160, 320, 32, 128, 128)),
    ("maxpool4", None),
    ("inception5a", (832, 256, 160, 320, 32, 128, 128)),
    ("inception5b", (832, 384, 192, 384, 48, 128, 128)),
]


def googlenet_params():
    S = Spec()

    def basic(p, cin, cout, k):
        S.conv(p + ".conv", cout, cin, k)
        S.bn(p + ".bn", cout)

    basic("conv1", 3, 64, 7)
    basic("conv2", 64, 64, 1)
    basic("conv3", 64, 192, 3)
    for name, a in INCEPTION:
        if a is None:
            continue
        cin, c1, c3r, c3, c5r, c5, pp = a
        basic(name + ".branch1", cin, c1, 1)
        basic(name + ".branch2.0", cin, c3r, 1)
        basic(name + ".branch2.1", c3r, c3, 3)
        basic(name + ".branch3.0", cin, c5r, 1)
        basic(name + ".branch3.1", c5r, c5, 3)  # torchvision uses 3x3 here
        basic(name + ".branch4.1", cin, pp, 1)
    for aux, cin in (("aux1", 512), ("aux2", 528)):
        basic(aux + ".conv", cin, 128, 1)
        S.linear(aux + ".fc1", 1024, 2048)
        S.linear(aux + ".fc2", 1000, 1024)
    S.linear("fc", 1000, 1024)
    return S.items


def googlenet_forward(P, x, tap=no_tap):
    eps = 1e-3

    def basic(p, x, stride=1, pad=0):
        return relu(bn(P, p + ".bn", conv(P, p + ".conv", x, stride, pad), eps))

    x = tap("conv1", basic("conv1", x, 2, 3))
    x = tap("maxpool1", maxpool2d(x, 3, 2, 0, True))
    x = tap("conv2", basic("conv2", x))
    x = tap("conv3", basic("conv3", x, 1, 1))
    x = tap("maxpool2", maxpool2d(x, 3, 2, 0, True))
    for name, a in INCEPTION:
        if name == "maxpool3":
            x = maxpool2d(x, 3, 2, 0, True)
        elif name == "maxpool4":
            x = maxpool2d(x, 2, 2, 0, True)
        else:
            b1 = basic(name + ".branch1", x)
            b2 = basic(name + ".branch2.1", basic(name + ".branch2.0", x), 1, 1)
            b3 = basic(name + ".branch3.1", basic(name + ".branch3.0", x), 1, 1)
            b4 = basic(name + ".branch4.1", maxpool2d(x, 3, 1, 1, True))
            x = jnp.concatenate([b1, b2, b3, b4], axis=1)
        x = tap(name, x)
    x = tap("avgpool", adaptive_avg_pool2d(x, 1, 1)).reshape(x.shape[0], -1)
    return tap("fc", linear(P, "fc", x))


# ---------------------------------------------------------------------------
# MobileNetV2 (torchvision)
# ---------------------------------------------------------------------------

MBV2 = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]


def mobilenet_v2_blocks():
    blocks, cin = [], 32
    for t, c, n, s in MBV2:
        for i in range(n):
            blocks.append((cin, c, s if i == 0 else 1, t))
            cin = c
    return blocks


def mobilenet_v2_params():
    S = Spec()
    S.conv("features.0.0", 32, 3, 3)
    S.bn("features.0.1", 32)
    blocks = mobilenet_v2_blocks()
    for bi, (cin, cout, s, t) in enumerate(blocks):
        p = f"features.{bi + 1}.conv"
        hid = int(round(cin * t))
        j = 0
        if t != 1:
            S.conv(f"{p}.0.0", hid, cin, 1)
            S.bn(f"{p}.0.1", hid)
            j = 1
        S.conv(f"{p}.{j}.0", hid, hid, 3, groups=hid)
        S.bn(f"{p}.{j}.1", hid)
        S.conv(f"{p}.{j + 1}", cout, hid, 1)
        S.bn(f"{p}.{j + 2}", cout)
    last = len(blocks) + 1
    S.conv(f"features.{last}.0", 1280, 320, 1)
    S.bn(f"features.{last}.1", 1280)
    S.linear("classifier.1", 1000, 1280)
    return S.items


def mobilenet_v2_forward(P, x, tap=no_tap):
    eps = 1e-5
    x = tap("features.0", relu6(bn(P, "features.0.1", conv(P, "features.0.0", x, 2, 1), eps)))
    blocks = mobilenet_v2_blocks()
    for bi, (cin, cout, s, t) in enumerate(blocks):
        p = f"features.{bi + 1}.conv"
        hid = int(round(cin * t))
        y, j = x, 0
        if t != 1:
            y = relu6(bn(P, f"{p}.0.1", conv(P, f"{p}.0.0", y), eps))
            j = 1
        y = relu6(bn(P, f"{p}.{j}.1", conv(P, f"{p}.{j}.0", y, s, 1, hid), eps))
        y = bn(P, f"{p}.{j + 2}", conv(P, f"{p}.{j + 1}", y), eps)
        x = tap(f"features.{bi + 1}", x + y if (s == 1 and cin == cout) else y)
    last = len(blocks) + 1
    x = relu6(bn(P, f"features.{last}.1", conv(P, f"features.{last}.0", x), eps))
    x = tap(f"features.{last}", x)
    x = tap("features", x)
    x = gap(x)
    return tap("classifier", linear(P, "classifier.1", x))


# ---------------------------------------------------------------------------
# SqueezeNet (torchvision)
# ---------------------------------------------------------------------------

SQUEEZE = {
    "squeezenet1_0": [
        ("conv", (3, 96, 7, 2)), ("relu", None), ("maxpool", None),
        ("fire", (96, 16, 64, 64)), ("fire", (128, 16, 64, 64)), ("fire", (128, 32, 128, 128)),
        ("maxpool", None),
        ("fire", (256, 32, 128, 128)), ("fire", (256, 48, 192, 192)), ("fire", (384, 48, 192, 192)),
        ("fire", (384, 64, 256, 256)),
        ("maxpool", None),
        ("fire", (512, 64, 256, 256)),
    ],
    "squeezenet1_1": [
        ("conv", (3, 64, 3, 2)), ("relu", None), ("maxpool", None),
        ("fire", (64, 16, 64, 64)), ("fire", (128, 16, 64, 64)),
        ("maxpool", None),
        ("fire", (128, 32, 128, 128)), ("fire", (256, 32, 128, 128)),
        ("maxpool", None),
        ("fire", (256, 48, 192, 192)), ("fire", (384, 48, 192, 192)), ("fire", (384, 64, 256, 256)),
        ("fire", (512, 64, 256, 256)),
    ],
}


def squeezenet_params(name):
    S = Spec()
    for i, (k, a) in enumerate(SQUEEZE[name]):
        p = f"features.{i}"
        if k == "conv":
            S.conv(p, a[1], a[0], a[2], bias=True)
        elif k == "fire":
            cin, sq, e1, e3 = a
            S.conv(p + ".squeeze", sq, cin, 1, bias=True)
            S.conv(p + ".expand1x1", e1, sq, 1, bias=True)
            S.conv(p + ".expand3x3", e3, sq, 3, bias=True)
    S.conv("classifier.1", 1000, 512, 1, bias=True)
    return S.items


def squeezenet_forward(name):
    layers = SQUEEZE[name]

    def fwd(P, x, tap=no_tap):
        for i, (k, a) in enumerate(layers):
            p = f"features.{i}"
            if k == "conv":
                x = conv(P, p, x, a[3], 0)
            elif k == "relu":
                x = relu(x)
            elif k == "maxpool":
                x = maxpool2d(x, 3, 2, 0, True)
            else:
                s = relu(conv(P, p + ".squeeze", x))
                x = jnp.concatenate(
                    [relu(conv(P, p + ".expand1x1", s)), relu(conv(P, p + ".expand3x3", s, 1, 1))], axis=1
                )
            x = tap(p, x)
        x = tap("features", x)
        x = relu(conv(P, "classifier.1", x))
        return tap("classifier", gap(x))

    return fwd


# ---------------------------------------------------------------------------
# EfficientNet-Lite0
# ---------------------------------------------------------------------------

# (repeats, kernel, stride, expand, out_channels)
LITE0 = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
         (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


def lite0_blocks():
    """[(stage, idx_in_stage, cin, cout, k, stride, expand)]"""
    out, cin = [], 32
    for si, (r, k, s, e, c) in enumerate(LITE0):
        for bi in range(r):
            out.append((si, bi, cin, c, k, s if bi == 0 else 1, e))
            cin = c
    return out


# ---- timm naming (efficientnet_lite0): symmetric padding k//2, BN eps 1e-5


def timm_lite0_params():
    S = Spec()
    S.conv("conv_stem", 32, 3, 3)
    S.bn("bn1", 32)
    for si, bi, cin, cout, k, s, e in lite0_blocks():
        p = f"blocks.{si}.{bi}"
        if e == 1:  # DepthwiseSeparableConv
            S.conv(p + ".conv_dw", cin, cin, k, groups=cin)
            S.bn(p + ".bn1", cin)
            S.conv(p + ".conv_pw", cout, cin, 1)
            S.bn(p + ".bn2", cout)
        else:  # InvertedResidual
            mid = cin * e
            S.conv(p + ".conv_pw", mid, cin, 1)
            S.bn(p + ".bn1", mid)
            S.conv(p + ".conv_dw", mid, mid, k, groups=mid)
            S.bn(p + ".bn2", mid)
            S.conv(p + ".conv_pwl", cout, mid, 1)
            S.bn(p + ".bn3", cout)
    S.conv("conv_head", 1280, 320, 1)
    S.bn("bn2", 1280)
    S.linear("classifier", 1000, 1280)
    return S.items


def timm_lite0_forward(P, x, tap=no_tap):
    eps = 1e-5
    x = tap("conv_stem", conv(P, "conv_stem", x, 2, 1))
    x = tap("bn1", relu6(bn(P, "bn1", x, eps)))  # BatchNormAct2d
    blocks = lite0_blocks()
    for n, (si, bi, cin, cout, k, s, e) in enumerate(blocks):
        p = f"blocks.{si}.{bi}"
        if e == 1:
            y = relu6(bn(P, p + ".bn1", conv(P, p + ".conv_dw", x, s, k // 2, cin), eps))
            y = bn(P, p + ".bn2", conv(P, p + ".conv_pw", y), eps)  # no pw act
        else:
            mid = cin * e
            y = relu6(bn(P, p + ".bn1", conv(P, p + ".conv_pw", x), eps))
            y = relu6(bn(P, p + ".bn2", conv(P, p + ".conv_dw", y, s, k // 2, mid), eps))
            y = bn(P, p + ".bn3", conv(P, p + ".conv_pwl", y), eps)
        x = tap(p, x + y if (s == 1 and cin == cout) else y)
        if n + 1 == len(blocks) or blocks[n + 1][0] != si:
            x = tap(f"blocks.{si}", x)
    x = tap("blocks", x)
    x = tap("conv_head", conv(P, "conv_head", x))
    x = tap("bn2", relu6(bn(P, "bn2", x, eps)))
    x = tap("global_pool", gap(x))
    return tap("classifier", linear(P, "classifier", x))


# ---- efficientnet_lite_pytorch naming: TF "SAME" padding, BN eps 1e-3


def pkg_lite0_params():
    S = Spec()
    S.conv("_conv_stem", 32, 3, 3)
    S.bn("_bn0", 32)
    for n, (si, bi, cin, cout, k, s, e) in enumerate(lite0_blocks()):
        p = f"_blocks.{n}"
        mid = cin * e
        if e != 1:
            S.conv(p + "._expand_conv", mid, cin, 1)
            S.bn(p + "._bn0", mid)
        S.conv(p + "._depthwise_conv", mid, mid, k, groups=mid)
        S.bn(p + "._bn1", mid)
        S.conv(p + "._project_conv", cout, mid, 1)
        S.bn(p + "._bn2", cout)
    S.conv("_conv_head", 1280, 320, 1)
    S.bn("_bn1", 1280)
    S.linear("_fc", 1000, 1280)
    return S.items


def conv_same(P, p, x, k, s, groups=1):
    t, b = same_pad(x.shape[2], k, s)
    l, r = same_pad(x.shape[3], k, s)
    return conv(P, p, x, s, (t, b, l, r), groups)


def pkg_lite0_forward(P, x, tap=no_tap):
    eps = 1e-3
    x = tap("_conv_stem", conv_same(P, "_conv_stem", x, 3, 2))
    x = tap("_bn0", bn(P, "_bn0", x, eps))
    # the model-level `_swish` module is called twice: here and after the head
    x = tap("_swish#stem", relu6(x))
    for n, (si, bi, cin, cout, k, s, e) in enumerate(lite0_blocks()):
        p = f"_blocks.{n}"
        mid = cin * e
        y = x
        if e != 1:
            y = relu6(bn(P, p + "._bn0", conv_same(P, p + "._expand_conv", y, 1, 1), eps))
        y = relu6(bn(P, p + "._bn1", conv_same(P, p + "._depthwise_conv", y, k, s, mid), eps))
        y = bn(P, p + "._bn2", conv_same(P, p + "._project_conv", y, 1, 1), eps)
        x = tap(p, x + y if (s == 1 and cin == cout) else y)
    x = tap("_conv_head", conv_same(P, "_conv_head", x, 1, 1))
    x = tap("_bn1", bn(P, "_bn1", x, eps))
    x = tap("_swish", relu6(x))
    x = tap("_avg_pooling", adaptive_avg_pool2d(x, 1, 1)).reshape(x.shape[0], -1)
    return tap("_fc", linear(P, "_fc", x))


# ---------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------

VGG11 = vgg_layers(False)
VGG11_BN = vgg_layers(True)

# name: (deepviz arch, params(), forward, gradcam layer, (cam layer, cam linear) | None, dream layer)
SPECS = {
    "resnet18": ("resnet18", lambda: resnet_params("resnet18"), resnet_forward("resnet18"),
                 "layer4", ("layer4", "fc"), "layer3"),
    "resnet50": ("resnet50", lambda: resnet_params("resnet50"), resnet_forward("resnet50"),
                 "layer4", ("layer4", "fc"), "layer3"),
    "vgg11": ("vgg11", lambda: seq_params(VGG11, 7), seq_forward(VGG11, 7, (0, 3, 6)),
              "features.19", None, "features.14"),
    "vgg11_bn": ("vgg11_bn", lambda: seq_params(VGG11_BN, 7), seq_forward(VGG11_BN, 7, (0, 3, 6)),
                 "features.27", None, "features.20"),
    "alexnet": ("alexnet", lambda: seq_params(ALEX_FEATURES, 6, cls_idx=(1, 4, 6)),
                seq_forward(ALEX_FEATURES, 6, (1, 4, 6)), "features.11", None, "features.7"),
    "googlenet": ("googlenet", googlenet_params, googlenet_forward,
                  "inception5b", ("inception5b", "fc"), "inception4c"),
    "mobilenet_v2": ("mobilenet_v2", mobilenet_v2_params, mobilenet_v2_forward,
                     "features", ("features", "classifier.1"), "features.7"),
    "squeezenet1_0": ("squeezenet1_0", lambda: squeezenet_params("squeezenet1_0"),
                      squeezenet_forward("squeezenet1_0"), "features.12", None, "features.7"),
    "squeezenet1_1": ("squeezenet1_1", lambda: squeezenet_params("squeezenet1_1"),
                      squeezenet_forward("squeezenet1_1"), "features.12", None, "features.7"),
    "efficientnet_lite0": ("efficientnet_lite0", timm_lite0_params, timm_lite0_forward,
                           "bn2", ("bn2", "classifier"), "blocks.5"),
    "efficientnet_lite0_pkg": ("efficientnet_lite0", pkg_lite0_params, pkg_lite0_forward,
                               "_swish", ("_swish", "_fc"), "_blocks.10"),
}
