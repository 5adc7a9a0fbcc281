"""`deepviz.segment` equals the CLI's `deepviz segment` (its `--raw` mask) on a sample photo, on
the CPU engine with the default model: the same seeds, the same cuts, mask for mask."""

import numpy as np
import pytest

import deepviz

from conftest import ROOT


def cli_mask(cli, tmp_path, *args):
    out = tmp_path / "segment"
    cli("segment", "--image", ROOT / "samples" / "chelsea.png", "--out", out, "--raw", "--device", "cpu", *args)
    return np.load(out / "chelsea_segment_mask.npy")


def same_mask(ours, theirs, what):
    assert theirs.shape == (224, 224) and theirs.dtype == np.float32, what
    assert ours.shape == (1, 224, 224) and ours.dtype == np.bool_, what
    diff = np.argwhere(ours[0] != (theirs > 0.5))
    assert len(diff) == 0, f"{what}: {len(diff)} pixels differ from the CLI's mask, the first at {tuple(diff[0])}"
    # a mask that is all one label would agree with a broken seeding as well
    frac = ours.mean()
    assert 0.01 < frac < 0.99, f"{what}: foreground fraction {frac}"


def test_saliency_segment_matches_the_cli(cli, model, chelsea, tmp_path):
    ours = deepviz.segment(model, chelsea, target=285)
    same_mask(ours, cli_mask(cli, tmp_path, "--class", 285), "saliency")


def test_gradcam_segment_with_options_matches_the_cli(cli, model, chelsea, tmp_path):
    ours = deepviz.segment(model, chelsea, method="gradcam", layer="_blocks.15", fg_quantile=0.9, iterations=2, largest_component=True)
    theirs = cli_mask(cli, tmp_path, "--method", "gradcam", "--layer", "_blocks.15", "--fg-quantile", 0.9, "--iterations", 2, "--largest-component")
    same_mask(ours, theirs, "gradcam")
    # one region: every foreground pixel is reachable from the first through 8-neighbours
    m = ours[0]
    seen = np.zeros_like(m)
    stack = [tuple(np.argwhere(m)[0])]
    while stack:
        y, x = stack.pop()
        if 0 <= y < 224 and 0 <= x < 224 and m[y, x] and not seen[y, x]:
            seen[y, x] = True
            stack.extend((y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    assert (seen == m).all()


def test_segment_refuses_bad_settings(model, chelsea):
    with pytest.raises(ValueError, match="quantile"):
        deepviz.segment(model, chelsea, fg_quantile=0.2, bg_quantile=0.5)
    with pytest.raises(ValueError):
        deepviz.segment(model, chelsea, method="no-such-method")
