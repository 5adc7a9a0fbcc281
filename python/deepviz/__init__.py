"""deepviz: see what a convolutional network has learned, from Python.

The attribution methods, CAMs and DeepDream of the deepviz Rust library (the code the `deepviz`
command runs, on its CPU engine, CUDA kernels or their emulation), in the shapes PyTorch users
know::

    import deepviz, numpy as np
    model = deepviz.Model()                                  # the embedded EfficientNet-Lite0
    x = model.load_images("samples/chelsea.png")             # [1, 3, 224, 224], preprocessed
    sal = deepviz.Saliency(model).attribute(x, target=285)   # captum: [1, 224, 224]
    cam = deepviz.GradCAM(model, target_layers=["_blocks.15"])(input_tensor=x, targets=[285])

Inputs are the model's input tensor, as in captum: float32 ``[N, 3, H, W]`` (or ``[3, H, W]``)
already preprocessed (resized and normalised by the model's ``mean`` / ``std``, as
``Model.load_images`` does and as the CLI does with image files). numpy arrays and anything
speaking DLPack (``__dlpack__``: torch tensors, numpy >= 1.22) are read in place; results are
numpy arrays, or torch tensors on the input's device when a torch tensor came in (shared with
deepviz's buffer through DLPack, not copied). torch is imported only when a torch tensor is given.

Maps are ``[N, h, w]``: ``attribute`` gives the library's raw maps (the CLI's ``--raw`` ``.npy``:
saliency and gradients at the input's size, CAMs at the layer's), the CAM classes called like
pytorch-grad-cam give them upsampled to the input and scaled to [0, 1] per image.

Layers are PyTorch module paths (``layer4``, ``features.29``, ``_blocks.15``); ``Model.layers``
lists them. Errors of the library are Python exceptions with its message (``ValueError`` for bad
shapes, unknown layers or methods).
"""

import json
import struct
import sys
import warnings

import numpy as np

from . import _native

__all__ = [
    "Model",
    "methods",
    "attribute",
    "Saliency",
    "InputXGradient",
    "GuidedBackprop",
    "Deconvolution",
    "IntegratedGradients",
    "NoiseTunnel",
    "GuidedGradCam",
    "CAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "XGradCAM",
    "LayerCAM",
    "EigenCAM",
    "ScoreCAM",
    "AblationCAM",
    "DeepDream",
    "Maximize",
    "segment",
]

__version__ = "0.1.0"

_METHODS = {m["name"]: m for m in _native.methods()}


def methods():
    """The attribution methods of the library's registry (the CLI's subcommands): dicts with
    name, title, paper, about, layer (whether it takes one), signed, options, gpu_precision."""
    return [dict(m) for m in _native.methods()]


# ---------------------------------------------------------------------------------------------
# arrays in and out


def _is_torch(x):
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "__dlpack__")


def _input(x):
    """``x`` as something the native module reads through DLPack (float32 on the CPU), and the
    torch tensor it came from (or None)."""
    if _is_torch(x):
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        torch = sys.modules["torch"]
        if t.dtype != torch.float32:
            t = t.float()
        return t, x
    if isinstance(x, np.ndarray) or not hasattr(x, "__dlpack__"):
        a = np.asarray(x)
        if a.dtype != np.float32:
            a = a.astype(np.float32)
        return a, None
    return x, None


def _output(arr, like):
    """A native result as numpy, or as a torch tensor on ``like``'s device."""
    if like is not None:
        torch = sys.modules["torch"]
        t = torch.from_dlpack(arr)
        return t if like.device.type == "cpu" else t.to(like.device)
    return np.from_dlpack(arr)


def _targets(target, n=None):
    """captum's ``target`` / pytorch-grad-cam's ``targets`` as the native module takes them: None
    (each input's top class), or a list of class numbers or `unit:` / `neuron:` strings."""
    if target is None:
        return None
    if isinstance(target, (int, np.integer, str)) or hasattr(target, "category"):
        target = [target]
    elif _is_torch(target) or isinstance(target, np.ndarray):
        target = np.asarray(target.cpu() if _is_torch(target) else target).reshape(-1).tolist()
    out = []
    for t in target:
        if hasattr(t, "category"):  # pytorch-grad-cam's ClassifierOutputTarget
            t = t.category
        if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
            if t < 0:
                raise ValueError(f"a class number must be >= 0, not {t}")
            out.append(int(t))
        elif isinstance(t, str):
            out.append(t)
        else:
            raise ValueError(f"a target is a class number or a string `unit:LAYER:C` / `neuron:LAYER:C:Y:X`, not {t!r}")
    return out


# ---------------------------------------------------------------------------------------------
# models


def _safetensors_bytes(state_dict, metadata):
    """A safetensors file's bytes for a state dict (floats as f32, integers as i64)."""
    torch = sys.modules["torch"]
    header, chunks, offset = {}, [], 0
    for name, t in state_dict.items():
        t = t.detach().cpu()
        if t.is_floating_point():
            t, dtype = t.to(torch.float32), "F32"
        elif t.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool):
            t, dtype = t.to(torch.int64), "I64"
        else:
            raise ValueError(f"tensor `{name}` has dtype {t.dtype}, which a model file cannot hold")
        b = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        chunks.append(b)
        offset += len(b)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(chunks)


class Model:
    """A model for deepviz, on a device.

    ``Model()`` is the embedded EfficientNet-Lite0 (ImageNet); ``Model("resnet50.safetensors")``
    a model file (safetensors with an ``arch`` in its metadata, or ``arch="resnet50"``; or ONNX);
    ``Model.from_torch(module, arch="resnet50")`` a live ``torch.nn.Module``.

    ``device``: ``"auto"`` (the first GPU, else the CPU engine with a warning), ``"cpu"``,
    ``"cuda"`` / ``"cuda:N"``, ``"emu"`` (the CUDA kernels on the CPU emulation: slow, for
    checking) — the CLI's ``--device``. ``precision``: the GPU's convolution arithmetic
    (``"fp32"``, ``"tf32"``, ``"bf16"``); by default the CLI's per method (TF32 for maps read at a
    layer, fp32 for gradients at the pixels) on a real GPU, fp32 elsewhere.
    """

    def __init__(self, path=None, arch=None, *, device="auto", precision=None):
        self._init(_native.Model(None if path is None else str(path), arch), device, precision)

    def _init(self, native, device, precision):
        self._model = native
        self.device = device
        self.precision = precision
        self._engines = {}

    @classmethod
    def from_torch(cls, module, arch, *, input_size=None, mean=None, std=None, device="auto", precision=None):
        """A live ``torch.nn.Module`` of an architecture deepviz knows (``arch``: the torchvision /
        timm name, as ``scripts/export_torch.py`` takes it), from its state dict, in memory.
        ``input_size`` / ``mean`` / ``std``: its preprocessing (default ImageNet's at 224, or
        timm's ``pretrained_cfg``)."""
        cfg = getattr(module, "pretrained_cfg", None) or {}
        size = input_size or (cfg.get("input_size", (3, 224, 224))[-2:] if cfg else None)
        meta = {"arch": arch, "exported_by": "deepviz.Model.from_torch"}
        if size is not None:
            size = (size, size) if isinstance(size, int) else tuple(size)
            meta["input_size"] = ",".join(str(int(s)) for s in size)
        for key, v in (("mean", mean or cfg.get("mean")), ("std", std or cfg.get("std"))):
            if v is not None:
                meta[key] = ",".join(f"{float(s):.6f}" for s in v)
        if getattr(module, "transform_input", False):
            meta["transform_input"] = "true"
        data = _safetensors_bytes(module.state_dict(), meta)
        m = cls.__new__(cls)
        m._init(_native.Model.from_bytes(data, f"torch module {type(module).__name__}", arch), device, precision)
        return m

    def to(self, device, precision=None):
        """The same model (weights shared) on another device."""
        m = Model.__new__(Model)
        m._init(self._model, device, precision if precision is not None else self.precision)
        return m

    arch = property(lambda self: self._model.arch, doc="the architecture (zoo name)")
    origin = property(lambda self: self._model.origin, doc="where the model came from")
    input_size = property(lambda self: self._model.input_size, doc="(height, width) of its input")
    mean = property(lambda self: self._model.mean, doc="per-channel mean of its preprocessing")
    std = property(lambda self: self._model.std, doc="per-channel std of its preprocessing")
    classes = property(lambda self: self._model.classes, doc="class names (ImageNet's for 1000 classes)")

    @property
    def layers(self):
        """Every layer name (PyTorch module path), in order, as ``deepviz layers`` lists them."""
        return [row[0] for row in self._model.layers()]

    def layer_table(self):
        """(module path, node it yields, op, output shape for one image) for every layer."""
        return self._model.layers()

    def load_images(self, *paths):
        """Image files (or preprocessed ``.npy`` tensors, or folders) preprocessed as the CLI does
        (resize, centre crop, normalise): a numpy array ``[N, 3, H, W]``."""
        flat = [str(p) for ps in paths for p in ([ps] if isinstance(ps, (str, bytes)) or not hasattr(ps, "__iter__") else ps)]
        return np.from_dlpack(self._model.load_images(flat))

    def engine(self, method=None):
        """The native engine for ``method``'s default precision on this model's device (made
        once and kept: the weights are prepared on the device once)."""
        precision = self.precision
        if precision is None and (self.device == "auto" or self.device.startswith("cuda")):
            info = _METHODS.get(method)
            precision = info["gpu_precision"] if info else "tf32"
        if precision not in self._engines:
            eng = _native.Engine(self._model, self.device, precision)
            if eng.note and not any(e.note for e in self._engines.values()):
                # `auto` fell back to the CPU: said once per model, as the CLI says it once per run
                warnings.warn(f"deepviz: {eng.note}", RuntimeWarning, stacklevel=3)
            self._engines[precision] = eng
        return self._engines[precision]

    def classify(self, x, k=5):
        """The top ``k`` classes of each input: lists of dicts (class, name, logit, prob)."""
        a, _ = _input(x)
        return [[dict(zip(("class", "name", "logit", "prob"), q)) for q in row] for row in self.engine().classify(a, k)]

    def __repr__(self):
        return f"deepviz.Model(arch={self.arch!r}, origin={self.origin!r}, device={self.device!r})"


def _run(model, method, x, target, resize=False, **opts):
    """The native method ``method`` on ``x``: (maps as numpy / torch, targets, extras)."""
    if not isinstance(model, Model):
        raise TypeError(f"expected a deepviz.Model, got {type(model).__name__} (wrap a torch module with deepviz.Model.from_torch)")
    a, like = _input(x)
    opts = {k: v for k, v in opts.items() if v is not None}
    maps, targets, extras = model.engine(method).attribute(method, a, _targets(target), resize=resize, **opts)
    return _output(maps, like), targets, {k: _output(v, like) for k, v in extras}


def attribute(model, method, inputs, target=None, **options):
    """Any method of the registry by its CLI name (``deepviz.methods()``), with the CLI's options
    as keywords (layer, samples, noise, smooth, base, baseline, seed, masks): its raw maps
    ``[N, h, w]``, as the CLI's ``--raw`` ``.npy`` files hold them."""
    return _run(model, method, inputs, target, **options)[0]


def segment(model, inputs, method="saliency", target=None, layer=None, fg_quantile=None, bg_quantile=None, iterations=None, largest_component=False):
    """Weakly supervised segmentation, the CLI's ``deepviz segment`` (Simonyan, Vedaldi, Zisserman
    2014, §3.1, with GrabCut: Rother, Kolmogorov, Blake 2004): each input's map by ``method``
    (default saliency; any method of ``methods()``, ``layer`` for the CAMs) seeds a GrabCut of the
    picture the input shows, its pixels at or above the map's ``fg_quantile`` (0.95) as
    foreground, at or below its ``bg_quantile`` (0.30) as background, ``iterations`` (5) rounds at
    most; ``largest_component`` keeps the largest 8-connected foreground region. Returns the
    masks, boolean ``[N, H, W]`` (True: foreground), as numpy (or torch for a torch input); the
    CLI's ``--raw`` ``_segment_mask.npy`` holds the same mask as float32 0 / 1."""
    if not isinstance(model, Model):
        raise TypeError(f"expected a deepviz.Model, got {type(model).__name__}")
    a, like = _input(inputs)
    masks, _ = model.engine(method).segment(
        a, method, _targets(target), layer=layer, fg_quantile=fg_quantile, bg_quantile=bg_quantile, iterations=iterations, largest_component=largest_component
    )
    m = np.from_dlpack(masks) > 0.5
    if like is not None:
        torch = sys.modules["torch"]
        t = torch.from_numpy(m)
        return t if like.device.type == "cpu" else t.to(like.device)
    return m


# ---------------------------------------------------------------------------------------------
# captum's shape: Method(model).attribute(inputs, target=...)


class _Attribution:
    _method = None

    def __init__(self, model, layer=None):
        self.model = model
        self.layer = layer

    @property
    def info(self):
        """The registry's entry: name, title, paper, about, ..."""
        return dict(_METHODS[self._method])

    def attribute(self, inputs, target=None):
        """Maps ``[N, h, w]`` of ``inputs`` for ``target`` (a class number, one per input, or
        None: each input's top class; or ``unit:LAYER:C`` / ``neuron:LAYER:C:Y:X`` strings)."""
        return _run(self.model, self._method, inputs, target, layer=self.layer)[0]


class Saliency(_Attribution):
    """Saliency (Simonyan et al. 2014): max over colour channels of |d score / d input|, at the
    input's size. captum's ``Saliency(abs=True)`` keeps the channels; deepviz takes their max."""

    _method = "saliency"

    def __init__(self, model):
        super().__init__(model)


class InputXGradient(_Attribution):
    """Input × gradient (Shrikumar et al. 2016), summed over colour channels (signed)."""

    _method = "gradxinput"

    def __init__(self, model):
        super().__init__(model)


class GuidedBackprop(_Attribution):
    """Guided backpropagation (Springenberg et al. 2015): the gradient with negative gradients
    stopped at every ReLU, max over channels of its absolute value."""

    _method = "guided"

    def __init__(self, model):
        super().__init__(model)


class Deconvolution(_Attribution):
    """Deconvnet (Zeiler & Fergus 2014): ReLUs pass the gradient's positive part."""

    _method = "deconvnet"

    def __init__(self, model):
        super().__init__(model)


class GuidedGradCam(_Attribution):
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times Grad-CAM at ``layer``
    (upsampled), as captum's ``GuidedGradCam(model, layer)``."""

    _method = "guided-gradcam"


class IntegratedGradients(_Attribution):
    """Integrated Gradients (Sundararajan et al. 2017), summed over colour channels (signed).

    ``baselines`` names the baseline (``"zero"``: captum's default, ``"black"``, ``"blur"``,
    ``"noise"``) rather than taking a tensor; ``n_steps`` Gauss–Legendre points (50)."""

    _method = "ig"

    def __init__(self, model):
        super().__init__(model)

    def attribute(self, inputs, baselines=None, target=None, n_steps=None, seed=None, return_convergence_delta=False):
        if baselines is not None and not isinstance(baselines, str):
            raise ValueError("baselines is a name here: zero, black, blur or noise")
        maps, _, extras = _run(self.model, self._method, inputs, target, samples=n_steps, baseline=baselines, seed=seed)
        if return_convergence_delta:
            return maps, extras["completeness_error"]
        return maps


class NoiseTunnel:
    """SmoothGrad (Smilkov et al. 2017) around another method, as captum's ``NoiseTunnel``:
    ``NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=50)``.

    deviates from captum: ``stdevs`` is the noise's standard deviation as a fraction of each
    input's value range (the paper's noise level, default 0.15), and the base method's maps (not
    its per-channel attributions) are combined."""

    def __init__(self, attribution_method):
        if not isinstance(attribution_method, _Attribution):
            raise TypeError("NoiseTunnel wraps a deepviz method, e.g. NoiseTunnel(deepviz.Saliency(model))")
        self.base = attribution_method

    def attribute(self, inputs, nt_type="smoothgrad", nt_samples=None, stdevs=None, target=None, seed=None):
        b = self.base
        return _run(b.model, "smoothgrad", inputs, target, base=b._method, layer=b.layer, smooth=nt_type, samples=nt_samples, noise=stdevs, seed=seed)[0]


# ---------------------------------------------------------------------------------------------
# pytorch-grad-cam's shape: Method(model, target_layers=[...])(input_tensor=x, targets=[...])


class _CAM(_Attribution):
    _takes_layer = True

    def __init__(self, model, target_layers=None, **kwargs):
        if kwargs.pop("use_cuda", None) is not None or kwargs.pop("reshape_transform", None) is not None:
            raise ValueError("use_cuda / reshape_transform do not apply: the device is the Model's")
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
        if isinstance(target_layers, str):
            target_layers = [target_layers]
        target_layers = list(target_layers) if target_layers is not None else []
        for layer in target_layers:
            if not isinstance(layer, str):
                raise ValueError(f"a layer is named by its module path (a string such as 'layer4'), not {type(layer).__name__}")
        if target_layers and not self._takes_layer:
            raise ValueError(f"{type(self).__name__} takes no layer: it is fixed by the architecture")
        # several layers: one map, combined as pytorch-grad-cam's target_layers (each scaled to
        # [0, 1] at the input's size, averaged, scaled again)
        super().__init__(model, target_layers[0] if len(target_layers) == 1 else (target_layers or None))

    def _options(self):
        return {}

    def __call__(self, input_tensor, targets=None, aug_smooth=False, eigen_smooth=False):
        """The maps ``[N, H, W]`` upsampled to the input and scaled to [0, 1] per image
        (pytorch-grad-cam's ``grayscale_cam``); ``targets`` class numbers or
        ``ClassifierOutputTarget``s, one per input or None (each input's top class).
        ``aug_smooth``: the mean map over the input flipped left-right or not, times 0.9, 1 and
        1.1, the targets fixed on the input as given."""
        extra = {"eigen_smooth": True} if eigen_smooth else {}
        if aug_smooth:
            extra["aug_smooth"] = True
        return _run(self.model, self._method, input_tensor, targets, resize=True, layer=self.layer, **self._options(), **extra)[0]

    def attribute(self, inputs, target=None):
        """The raw maps ``[N, h, w]`` at the layer's resolution (the CLI's ``--raw`` arrays)."""
        return _run(self.model, self._method, inputs, target, layer=self.layer, **self._options())[0]


class CAM(_CAM):
    """Class activation maps (Zhou et al. 2016): the classifier's weights over the last feature
    layer; only for a linear classifier after global average pooling."""

    _method = "cam"
    _takes_layer = False


class GradCAM(_CAM):
    """Grad-CAM (Selvaraju et al. 2017): ReLU(Σ_k α_k A_k), α_k the spatial mean of the gradient."""

    _method = "gradcam"


class GradCAMPlusPlus(_CAM):
    """Grad-CAM++ (Chattopadhyay et al. 2018)."""

    _method = "gradcampp"


class XGradCAM(_CAM):
    """XGrad-CAM (Fu et al. 2020)."""

    _method = "xgradcam"


class LayerCAM(_CAM):
    """LayerCAM (Jiang et al. 2021)."""

    _method = "layercam"


class EigenCAM(_CAM):
    """Eigen-CAM (Muhammad & Yeasin 2020): the activations' first principal component."""

    _method = "eigencam"


class _MaskedCAM(_CAM):
    def __init__(self, model, target_layers=None, batch_size=None, **kwargs):
        super().__init__(model, target_layers, **kwargs)
        self.batch_size = batch_size

    def _options(self):
        return {"masks": self.batch_size}


class ScoreCAM(_MaskedCAM):
    """Score-CAM (Wang et al. 2020); ``batch_size``: changed inputs per forward pass."""

    _method = "scorecam"


class AblationCAM(_MaskedCAM):
    """Ablation-CAM (Desai & Ramaswamy 2020); ``batch_size``: ablated copies per forward pass."""

    _method = "ablationcam"


for _cls in (Saliency, InputXGradient, GuidedBackprop, Deconvolution, GuidedGradCam, IntegratedGradients, CAM, GradCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, EigenCAM, ScoreCAM, AblationCAM):
    _cls.__doc__ = f"{_cls.__doc__}\n\n    Paper: {_METHODS[_cls._method]['paper']}. CLI: ``deepviz {_cls._method}``."


# ---------------------------------------------------------------------------------------------
# DeepDream


class DeepDream:
    """DeepDream (Mordvintsev, Olah, Tyka 2015): gradient ascent on ½‖A_layer‖² with octaves,
    jitter and gradient normalisation, as ``deepviz dream``; ``None`` options take the CLI's
    defaults (4 octaves × 1.4, 10 steps, lr 0.02, jitter 32, seed 0). ``guide``: a preprocessed
    guide image ``[1, 3, H, W]`` to dream towards instead (each position of the layer pulled to
    the guide's most similar feature vector, the DeepDream notebook's ``objective_guide``)."""

    def __init__(self, model, layer=None, *, octaves=None, octave_scale=None, steps=None, lr=None, jitter=None, seed=None, guide=None):
        self.model = model
        self.layer = layer
        self.options = dict(octaves=octaves, octave_scale=octave_scale, steps=steps, lr=lr, jitter=jitter, seed=seed)
        self.guide = None if guide is None else _input(guide)[0]

    def __call__(self, inputs):
        """The dreamed inputs ``[N, 3, H, W]``, normalised like ``inputs``."""
        a, like = _input(inputs)
        opts = {k: v for k, v in self.options.items() if v is not None}
        if self.guide is not None:
            opts["guide"] = self.guide
        return _output(self.model.engine("dream").dream(a, layer=self.layer, **opts), like)

    dream = __call__


# ---------------------------------------------------------------------------------------------
# Activation maximisation


class Maximize:
    """Activation maximisation, as ``deepviz maximize``: the picture that most excites each
    target (Simonyan et al. 2014 for a class; lucid / lucent's ``channel`` and ``neuron``
    objectives for ``"unit:LAYER:C"`` and ``"neuron:LAYER:C:Y:X"``), by gradient ascent with
    jitter, random scale and rotation. ``param="pixels"`` optimises the pixels (with L2 decay and
    blur); ``param="fourier"`` is lucid / lucent's default, ``to_valid_rgb(fft_image(...,
    sd, decay_power), decorrelate)``: a spectrum made into the picture by an inverse real FFT
    with 1/f scaling, colour decorrelation and a sigmoid. ``None`` options take the CLI's
    defaults for the parameterisation (pixels: 200 steps of lr 0.05, l2 1e-4; fourier: lr 0.01,
    no L2, decay_power 1, sd 0.01)."""

    def __init__(self, model, *, size=None, steps=None, lr=None, l2=None, jitter=None, seed=None, param="pixels", decay_power=None, sd=None, decorrelate=True):
        self.model = model
        self.options = dict(size=size, steps=steps, lr=lr, l2=l2, jitter=jitter, seed=seed, param=param, decay_power=decay_power, sd=sd, decorrelate=decorrelate)

    def __call__(self, targets):
        """One picture ``[N, 3, H, W]`` per target (a class number or a unit / neuron string),
        normalised as the model's input, as numpy."""
        targets = [targets] if isinstance(targets, (int, str)) else list(targets)
        opts = {k: v for k, v in self.options.items() if v is not None}
        return _output(self.model.engine("maximize").maximize(targets, **opts), None)

    maximize = __call__
