"""Arrays in and out through DLPack (read in place, results shared without a copy), and errors
as Python exceptions with the library's message."""

import numpy as np
import pytest

import deepviz
from deepviz import _native


def test_inputs_are_read_in_place():
    x = np.arange(2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7)
    ptr, device, shape = _native.dlpack_describe(x)
    assert ptr == x.ctypes.data and device == (1, 0) and shape == [2, 3, 5, 7]
    view = x[1:]
    assert _native.dlpack_describe(view)[0] == view.ctypes.data


def test_results_are_shared_not_copied():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7)).astype(np.float32)
    arr = _native.dlpack_roundtrip(x)
    y = np.from_dlpack(arr)
    assert y.ctypes.data == arr.data_ptr, "numpy copied the result"
    np.testing.assert_array_equal(y, x)
    assert y.ctypes.data != x.ctypes.data  # the engine's tensor is its own
    # the buffer outlives the producer object
    del arr
    np.testing.assert_array_equal(y, x)


def test_strided_inputs_are_read_as_their_values():
    x = np.random.default_rng(1).standard_normal((3, 4, 9, 11)).astype(np.float32)
    for view in (x[:, 1:4, ::2, 1::3], x.transpose(0, 1, 3, 2), x[::-1, :3]):
        np.testing.assert_array_equal(np.from_dlpack(_native.dlpack_roundtrip(view)), np.ascontiguousarray(view))


def test_method_results_are_numpy_float32_and_inputs_may_be_any_float(model, small):
    x, _ = small
    a = deepviz.Saliency(model).attribute(x[:1].astype(np.float64), target=3)
    b = deepviz.Saliency(model).attribute(x[0], target=3)  # [3, h, w] is one image
    assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == (1, 72, 88)
    np.testing.assert_array_equal(a, b)


def test_bad_shapes_are_value_errors(model):
    sal = deepviz.Saliency(model)
    for bad in (np.zeros((1, 4, 32, 32), np.float32), np.zeros((32, 32), np.float32), np.zeros((0, 3, 32, 32), np.float32)):
        with pytest.raises(ValueError, match="shape"):
            sal.attribute(bad)
    with pytest.raises(ValueError, match="finite"):
        sal.attribute(np.full((1, 3, 32, 32), np.nan, np.float32))
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        sal.attribute(np.zeros((1, 3, 32, 32), np.float32), target=[1, 2])


def test_unknown_layers_methods_and_options_are_value_errors(model, small):
    x, _ = small
    with pytest.raises(ValueError, match=r"unknown layer `_blocks\.66`"):
        deepviz.GradCAM(model, target_layers=["_blocks.66"]).attribute(x)
    with pytest.raises(ValueError, match="unknown method `nope`"):
        deepviz.attribute(model, "nope", x)
    with pytest.raises(ValueError, match="takes no layer"):
        deepviz.attribute(model, "saliency", x, layer="_blocks.1")
    with pytest.raises(ValueError, match="unknown baseline"):
        deepviz.IntegratedGradients(model).attribute(x, baselines="grey")
    with pytest.raises(ValueError, match="one layer"):
        deepviz.attribute(model, "guided-gradcam", x, layer=["_blocks.1", "_blocks.3"])
    with pytest.raises(ValueError, match="unknown layer"):
        deepviz.Saliency(model).attribute(x, target="unit:nowhere:1")
    with pytest.raises(ValueError, match="unknown device"):
        deepviz.Saliency(model.to("tpu")).attribute(x)


def test_unit_targets(model, small):
    x, _ = small
    maps = deepviz.Saliency(model).attribute(x[:1], target="unit:_blocks.4:5")
    assert maps.shape == (1, 72, 88) and maps.max() > 0


def test_models_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        deepviz.Model(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.safetensors"):
        deepviz.Model(bad)
    with pytest.raises(ValueError, match="arch"):
        deepviz.Model(arch="resnet50")
    with pytest.raises(TypeError, match="DLPack|float"):
        deepviz.Saliency(deepviz.Model(device="cpu")).attribute(object())


def test_model_properties(model):
    assert model.arch == "efficientnet_lite0" and model.input_size == (224, 224)
    assert len(model.classes) == 1000 and "_blocks.15" in model.layers
    assert model.layer_table()[-1][3] == [1, 1000]
