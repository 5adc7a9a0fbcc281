"""Every method of the Python package equals what the `deepviz` command computes on the same
input (its `--raw` arrays), on the CPU engine with the default model."""

import json

import numpy as np
import pytest

import deepviz

from conftest import ROOT


def close(a, b, what, rtol=1e-5):
    """a == b up to float noise relative to b's scale; on failure, the worst element."""
    assert a.shape == b.shape, f"{what}: shape {a.shape} vs {b.shape}"
    scale = float(np.abs(b).max()) or 1.0
    err = np.abs(a.astype(np.float64) - b)
    i = np.unravel_index(int(err.argmax()), err.shape)
    assert err[i] <= rtol * scale, f"{what}: worst at {i}: {a[i]} vs {b[i]} (scale {scale})"


def cli_maps(cli, tmp_path, method, image, stems, *args):
    out = tmp_path / method
    cli(method, "--image", image, "--out", out, "--raw", "--device", "cpu", *args)
    return np.stack([np.load(out / f"{s}_{method}.npy") for s in stems])


def test_saliency_and_gradcam_match_the_cli_on_a_sample(cli, model, chelsea, tmp_path):
    png = ROOT / "samples" / "chelsea.png"
    sal = deepviz.Saliency(model).attribute(chelsea, target=285)
    assert sal.shape == (1, 224, 224) and sal.dtype == np.float32
    close(sal, cli_maps(cli, tmp_path, "saliency", png, ["chelsea"], "--class", 285), "saliency")
    cam = deepviz.GradCAM(model, target_layers=["_blocks.8"]).attribute(chelsea, target=285)
    close(cam, cli_maps(cli, tmp_path, "gradcam", png, ["chelsea"], "--class", 285, "--layer", "_blocks.8"), "gradcam")
    assert cam.shape == (1, 14, 14)  # _blocks.8 at 224: 14x14


# (method, python call, CLI options): every method of the registry, on the small batch
CASES = {
    "saliency": (lambda m, x: deepviz.Saliency(m).attribute(x), []),
    "gradxinput": (lambda m, x: deepviz.InputXGradient(m).attribute(x, target=[281, 281]), ["--class", 281]),
    "guided": (lambda m, x: deepviz.GuidedBackprop(m).attribute(x), []),
    "deconvnet": (lambda m, x: deepviz.Deconvolution(m).attribute(x), []),
    "smoothgrad": (
        lambda m, x: deepviz.NoiseTunnel(deepviz.Saliency(m)).attribute(x, nt_samples=3, stdevs=0.1, seed=4),
        ["--samples", 3, "--noise", 0.1, "--seed", 4],
    ),
    "ig": (lambda m, x: deepviz.IntegratedGradients(m).attribute(x, baselines="black", n_steps=4), ["--samples", 4, "--baseline", "black"]),
    "cam": (lambda m, x: deepviz.CAM(m).attribute(x), []),
    "gradcam": (lambda m, x: deepviz.GradCAM(m).attribute(x), []),
    "guided-gradcam": (lambda m, x: deepviz.GuidedGradCam(m, "_blocks.6").attribute(x), ["--layer", "_blocks.6"]),
    "gradcampp": (lambda m, x: deepviz.GradCAMPlusPlus(m, target_layers=["_blocks.4"]).attribute(x), ["--layer", "_blocks.4"]),
    "xgradcam": (lambda m, x: deepviz.XGradCAM(m).attribute(x), []),
    "layercam": (lambda m, x: deepviz.LayerCAM(m, ["_blocks.3"]).attribute(x), ["--layer", "_blocks.3"]),
    "eigencam": (lambda m, x: deepviz.EigenCAM(m).attribute(x), []),
    "scorecam": (lambda m, x: deepviz.ScoreCAM(m, ["_blocks.1"], batch_size=8).attribute(x), ["--layer", "_blocks.1", "--masks", 8]),
    "ablationcam": (lambda m, x: deepviz.AblationCAM(m, ["_blocks.1"]).attribute(x), ["--layer", "_blocks.1"]),
}


def test_every_method_of_the_registry_is_covered():
    assert sorted(CASES) == sorted(m["name"] for m in deepviz.methods())


@pytest.mark.parametrize("method", sorted(CASES))
def test_method_matches_the_cli(method, cli, model, small, tmp_path):
    x, path = small
    call, args = CASES[method]
    ours = call(model, x)
    assert ours.dtype == np.float32 and ours.ndim == 3 and ours.shape[0] == 2
    assert np.isfinite(ours).all() and np.abs(ours).max() > 0, f"{method}: an all-zero map proves nothing"
    close(ours, cli_maps(cli, tmp_path, method, path, ["small_0", "small_1"], *args), method)


def test_the_generic_call_and_the_registry(model, small):
    x, _ = small
    info = {m["name"]: m for m in deepviz.methods()}
    assert info["gradcam"]["layer"] and not info["saliency"]["layer"]
    assert "Selvaraju" in info["gradcam"]["paper"] and "Selvaraju" in deepviz.GradCAM.__doc__
    a = deepviz.attribute(model, "gradcam", x, target=281, layer="_blocks.8")
    b = deepviz.GradCAM(model, target_layers="_blocks.8").attribute(x, target=[281, 281])
    np.testing.assert_array_equal(a, b)


def test_pytorch_grad_cam_call_is_the_normalised_upsampled_map(model, small):
    x, _ = small
    method = deepviz.GradCAM(model, target_layers=["_blocks.8"])

    class ClassifierOutputTarget:  # pytorch-grad-cam's target objects carry `category`
        def __init__(self, category):
            self.category = category

    pic = method(input_tensor=x, targets=[ClassifierOutputTarget(281), 967])
    assert pic.shape == (2, 72, 88) and pic.dtype == np.float32
    assert pic.min() == 0.0 and np.allclose(pic.reshape(2, -1).max(axis=1), 1.0)
    raw = method.attribute(x, target=[281, 967])
    up = np.stack([bilinear(r, 72, 88) for r in raw])
    lo, hi = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    close(pic, (up - lo) / (hi - lo), "normalised upsampled Grad-CAM")


def test_eigen_smooth_matches_the_cli(cli, model, small, tmp_path):
    x, path = small
    ours = deepviz.attribute(model, "layercam", x, layer="_blocks.3", eigen_smooth=True)
    close(ours, cli_maps(cli, tmp_path, "layercam", path, ["small_0", "small_1"], "--layer", "_blocks.3", "--eigen-smooth"), "layercam eigen_smooth")
    method = deepviz.GradCAM(model, target_layers=["_blocks.8"])
    pic, plain = method(input_tensor=x, eigen_smooth=True), method(input_tensor=x)
    assert pic.shape == plain.shape and pic.min() == 0.0 and np.allclose(pic.reshape(2, -1).max(axis=1), 1.0)
    assert not np.allclose(pic, plain), "eigen_smooth changed nothing"


def scale_cam(m):
    """pytorch-grad-cam's scale_cam_image of one map, without the resize."""
    m = m - m.min()
    return m / (1e-7 + m.max())


def test_several_layers_and_aug_smooth_follow_pytorch_grad_cam(model, small):
    """pytorch-grad-cam's recipe written out in numpy from deepviz's raw single-layer maps."""
    x, _ = small
    layers, targets = ["_blocks.5", "_blocks.8"], [281, 967]
    h, w = x.shape[2:]

    def forward(xa):
        scaled = [np.stack([bilinear(scale_cam(np.maximum(r, 0)), h, w) for r in deepviz.GradCAM(model, target_layers=[l]).attribute(xa, target=targets)]) for l in layers]
        return np.stack([scale_cam(m) for m in np.mean(scaled, axis=0)])

    method = deepviz.GradCAM(model, target_layers=layers)
    close(method(input_tensor=x, targets=targets), forward(x), "Grad-CAM at two layers")
    want = np.mean([forward(np.ascontiguousarray(k * (x[..., ::-1] if flip else x)))[..., :: -1 if flip else 1] for flip in (False, True) for k in (0.9, 1.0, 1.1)], axis=0)
    close(method(input_tensor=x, targets=targets, aug_smooth=True), want, "Grad-CAM aug_smooth at two layers")


def bilinear(a, h, w):
    """PyTorch's bilinear resize (align_corners=False) of a 2-d array, in numpy."""

    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    y0, y1, fy = axis(a.shape[0], h)
    x0, x1, fx = axis(a.shape[1], w)
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bot = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return top * (1 - fy[:, None]) + bot * fy[:, None]


def test_top_class_targets_and_integrated_gradients_delta(model, chelsea):
    top = model.classify(chelsea, k=3)[0]
    assert [p["name"] for p in top][:1] == ["Egyptian cat"] and abs(sum(p["prob"] for p in top) - 1) < 0.5
    sal_top = deepviz.Saliency(model).attribute(chelsea)
    sal_cls = deepviz.Saliency(model).attribute(chelsea, target=top[0]["class"])
    np.testing.assert_array_equal(sal_top, sal_cls)
    x = np.ascontiguousarray(chelsea[:, :, ::4, ::4])
    maps, delta = deepviz.IntegratedGradients(model).attribute(x, target=285, n_steps=8, return_convergence_delta=True)
    assert delta.shape == (1,) and np.isfinite(delta).all()


def test_classify_matches_the_cli(cli, model, chelsea):
    out = json.loads(cli("classify", "--image", ROOT / "samples" / "chelsea.png", "--json", "--device", "cpu"))
    theirs = out[0]["top"]
    ours = model.classify(chelsea, k=5)[0]
    assert [p["class"] for p in ours] == [p["class"] for p in theirs]
    assert np.allclose([p["logit"] for p in ours], [p["logit"] for p in theirs], rtol=1e-5)


def test_deepdream_matches_the_cli(cli, model, small, tmp_path):
    x, path = small
    x1 = np.ascontiguousarray(x[:1])
    np.save(tmp_path / "one.npy", x1)
    opts = dict(octaves=2, octave_scale=1.2, steps=2, jitter=4, seed=3)
    ours = deepviz.DeepDream(model, "_blocks.4", **opts)(x1)
    cli("dream", "--image", tmp_path / "one.npy", "--out", tmp_path / "d", "--raw", "--device", "cpu", "--layer", "_blocks.4",
        "--octaves", 2, "--octave-scale", 1.2, "--steps", 2, "--jitter", 4, "--seed", 3)
    theirs = np.load(tmp_path / "d" / "one_dream.npy")
    assert ours.shape == x1.shape and ours.dtype == np.float32
    assert np.abs(ours - x1).max() > 1e-3, "the dream changed nothing"
    close(ours, theirs, "dream")
    # a guide: the same picture whether given as a file (the CLI) or as its preprocessed tensor
    coffee = ROOT / "samples" / "coffee.png"
    guided = deepviz.DeepDream(model, "_blocks.4", guide=model.load_images(coffee), **opts)(x1)
    cli("dream", "--image", tmp_path / "one.npy", "--out", tmp_path / "g", "--raw", "--device", "cpu", "--layer", "_blocks.4",
        "--octaves", 2, "--octave-scale", 1.2, "--steps", 2, "--jitter", 4, "--seed", 3, "--guide", coffee)
    close(guided, np.load(tmp_path / "g" / "one_dream.npy"), "guided dream")
    assert np.abs(guided - ours).max() > 1e-3, "the guide changed nothing"


@pytest.mark.parametrize("param", ["pixels", "fourier"])
def test_maximize_matches_the_cli(param, cli, model, tmp_path):
    ours = deepviz.Maximize(model, size=40, steps=3, param=param)([285, "unit:_blocks.5:3"])
    out = tmp_path / param
    cli("maximize", "--class", 285, "--unit", "_blocks.5:3", "--size", 40, "--steps", 3, "--param", param, "--out", out, "--raw", "--device", "cpu")
    theirs = np.concatenate([np.load(out / "maximize_c285.npy"), np.load(out / "maximize_unit-_blocks.5._bn2-3.npy")])
    assert ours.shape == (2, 3, 40, 40) and ours.dtype == np.float32
    close(ours, theirs, f"maximize {param}")
    with pytest.raises(ValueError, match="unknown parameterisation"):
        deepviz.Maximize(model, param="wavelet", steps=1, size=16)(1)


def test_emulated_gpu_engine_agrees_with_the_cpu(model, small):
    x, _ = small
    x = np.ascontiguousarray(x[:1, :, :40, :40])
    cpu = deepviz.GradCAM(model, ["_blocks.4"]).attribute(x, target=1)
    emu = deepviz.GradCAM(model.to("emu"), ["_blocks.4"]).attribute(x, target=1)
    close(emu, cpu, "gradcam emu vs cpu", rtol=1e-3)


def test_the_cli_npz_stacks_every_map_of_a_run(cli, tmp_path):
    """`--npz`: one archive per run that numpy.load reads (its CRCs checked), equal to the
    per-map .npy files, with each map's image, stem and target."""
    import zipfile

    out = tmp_path / "npz"
    cli("gradcam", "--image", ROOT / "samples", "--class", "285,967", "--out", out, "--raw", "--npz", "--device", "cpu")
    assert zipfile.ZipFile(out / "gradcam.npz").testzip() is None
    z = np.load(out / "gradcam.npz")
    assert sorted(z.files) == ["images", "maps", "stems", "targets"]
    assert z["maps"].shape == (4, 7, 7) and z["maps"].dtype == np.float32
    assert list(z["stems"]) == ["chelsea_c285", "chelsea_c967", "coffee_c285", "coffee_c967"]
    assert list(z["targets"]) == ["class:285", "class:967"] * 2
    assert [p.endswith(n) for p, n in zip(z["images"], ["chelsea.png", "chelsea.png", "coffee.png", "coffee.png"])] == [True] * 4
    for s, m in zip(z["stems"], z["maps"]):
        np.testing.assert_array_equal(m, np.load(out / f"{s}_gradcam.npy"))
