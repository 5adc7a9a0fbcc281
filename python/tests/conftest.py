"""Fixtures: the repository, the `deepviz` command the Python results are compared with, the
default model on the CPU engine, and inputs."""

import os
import pathlib
import subprocess

import numpy as np
import pytest

import deepviz

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cli():
    """A function running the `deepviz` command (DEEPVIZ_CLI, else the one `cargo test` builds in
    target/debug, else target/release): a missing binary fails, it never skips."""
    exe = os.environ.get("DEEPVIZ_CLI")
    if not exe:
        found = [ROOT / "target" / p / "deepviz" for p in ("debug", "release") if (ROOT / "target" / p / "deepviz").exists()]
        if not found:
            pytest.fail("no deepviz binary: build it (cargo build) or set DEEPVIZ_CLI")
        exe = str(found[0])

    def run(*args):
        r = subprocess.run([exe, *map(str, args)], capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError(f"deepviz {' '.join(map(str, args))} failed ({r.returncode}): {r.stderr}")
        return r.stdout

    return run


@pytest.fixture(scope="session")
def model():
    return deepviz.Model(device="cpu")


@pytest.fixture(scope="session")
def chelsea(model):
    """samples/chelsea.png preprocessed as the CLI does: [1, 3, 224, 224]."""
    return model.load_images(ROOT / "samples" / "chelsea.png")


@pytest.fixture(scope="session")
def small(model, tmp_path_factory):
    """Two 72x88 crops (chelsea, coffee), preprocessed, and the .npy file the CLI reads them from:
    small enough for the methods that run many passes."""
    x = model.load_images(ROOT / "samples" / "chelsea.png", ROOT / "samples" / "coffee.png")
    x = np.ascontiguousarray(x[:, :, 60:132, 70:158])
    path = tmp_path_factory.mktemp("inputs") / "small.npy"
    np.save(path, x)
    return x, path
