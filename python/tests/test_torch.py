"""torch interop: live modules exported in-process, torch tensors in and out (CPU and CUDA), and
the maps against PyTorch itself (autograd and hooks), captum and pytorch-grad-cam where they are
installed. Marked `gpu`: they run in the GPU check, where PyTorch is present (CI runs
`-m "not gpu"`, and without torch they skip)."""

import numpy as np
import pytest

import deepviz

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.gpu

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None).eval()
    # random batch-norm statistics, so folding them is exercised
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 64, 80, generator=torch.Generator().manual_seed(1))


def torch_saliency(m, x, target):
    x = x.clone().requires_grad_(True)
    m(x)[torch.arange(len(x)), target].sum().backward()
    return x.grad.abs().amax(dim=1)


def torch_gradcam(m, x, target, layer):
    acts = {}
    h = dict(m.named_modules())[layer].register_forward_hook(lambda mod, i, o: acts.__setitem__("a", o))
    out = m(x)
    h.remove()
    a = acts["a"]
    g = torch.autograd.grad(out[torch.arange(len(x)), target].sum(), a)[0]
    return torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1))


def test_from_torch_matches_autograd_and_hooks(resnet, x):
    model = deepviz.Model.from_torch(resnet, arch="resnet18", device="cpu")
    assert model.arch == "resnet18" and "layer4.1.conv2" in model.layers
    target = [3, 7]
    sal = deepviz.Saliency(model).attribute(x, target=target)
    assert isinstance(sal, torch.Tensor) and sal.dtype == torch.float32 and sal.shape == (2, 64, 80)
    ref = torch_saliency(resnet, x, torch.tensor(target))
    assert torch.allclose(sal, ref, rtol=1e-3, atol=1e-4 * ref.abs().max())
    cam = deepviz.GradCAM(model, target_layers=["layer4"]).attribute(x, target=target)
    ref = torch_gradcam(resnet, x, torch.tensor(target), "layer4").detach()
    assert torch.allclose(cam, ref, rtol=1e-3, atol=1e-4 * ref.abs().max())


def test_torch_tensors_come_back_as_torch_on_their_device(resnet, x):
    for dev in DEVICES:
        model = deepviz.Model.from_torch(resnet, arch="resnet18", device="cuda" if dev == "cuda" else "cpu")
        xd = x.clone().to(dev).requires_grad_(True)  # a tensor that needs grad is detached, not refused
        cam = deepviz.GradCAM(model, target_layers=["layer3"])(input_tensor=xd, targets=[1, 2])
        assert isinstance(cam, torch.Tensor) and cam.device.type == dev and cam.shape == (2, 64, 80)
        dream = deepviz.DeepDream(model, "layer2", octaves=1, steps=1)(x.to(dev))
        assert dream.device.type == dev and dream.shape == x.shape


def test_cpu_results_share_their_buffer_with_torch(resnet, x):
    model = deepviz.Model.from_torch(resnet, arch="resnet18", device="cpu")
    from deepviz import _native

    arr = _native.dlpack_roundtrip(x)
    assert torch.from_dlpack(arr).data_ptr() == arr.data_ptr
    assert _native.dlpack_describe(x)[0] == x.data_ptr()
    assert deepviz.Saliency(model).attribute(x.numpy(), target=0).shape == (2, 64, 80)


def test_against_captum(resnet, x):
    captum = pytest.importorskip("captum.attr")
    model = deepviz.Model.from_torch(resnet, arch="resnet18", device="cpu")
    ours = deepviz.Saliency(model).attribute(x, target=5)
    theirs = captum.Saliency(resnet).attribute(x, target=5, abs=True).amax(dim=1)
    assert torch.allclose(ours, theirs, rtol=1e-3, atol=1e-4 * theirs.abs().max())
    # same quadrature (Gauss-Legendre, 50 points), same zero baseline; ours sums the channels
    ours = deepviz.IntegratedGradients(model).attribute(x, target=5)
    theirs = captum.IntegratedGradients(resnet).attribute(x, target=5, n_steps=50).sum(dim=1)
    # 50 gradients, each of which jumps where a ReLU sits on its kink: 1e-3 of the map's scale
    err = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    assert err < 1e-3, err


def test_against_pytorch_grad_cam(resnet, x):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = deepviz.Model.from_torch(resnet, arch="resnet18", device="cpu")
    targets = [ClassifierOutputTarget(5), ClassifierOutputTarget(9)]
    # pytorch-grad-cam resizes with OpenCV (bilinear, half-pixel centres, as ours) and scales each
    # map to [0, 1]; measured on the CPU: 3e-7 (Grad-CAM), 1.3e-6 (Grad-CAM++)
    for ours_cls, theirs_cls in ((deepviz.GradCAM, pgc.GradCAM), (deepviz.GradCAMPlusPlus, pgc.GradCAMPlusPlus), (deepviz.XGradCAM, pgc.XGradCAM)):
        ours = ours_cls(model, target_layers=["layer4"])(input_tensor=x, targets=targets)
        with theirs_cls(model=resnet, target_layers=[resnet.layer4]) as cam:
            theirs = cam(input_tensor=x, targets=targets)
        assert np.abs(ours.numpy() - theirs).max() < 1e-4, ours_cls.__name__
    # several layers and aug_smooth (ttach's flips and 0.9 / 1 / 1.1), with given targets: without
    # them pytorch-grad-cam takes each augmented input's own top class, deepviz the input's
    ours = deepviz.GradCAM(model, target_layers=["layer3", "layer4"])(input_tensor=x, targets=targets, aug_smooth=True)
    with pgc.GradCAM(model=resnet, target_layers=[resnet.layer3, resnet.layer4]) as cam:
        theirs = cam(input_tensor=x, targets=targets, aug_smooth=True)
    assert np.abs(ours.numpy() - theirs).max() < 1e-4, "Grad-CAM, two layers, aug_smooth"
