"""The golden fixtures' deterministic random weights (README.md, "Random weights"), numpy
only, so that scripts without JAX (make_hooks.py, which needs torch) use the same values as
nets.py and tests/common/st.rs."""

import math

import numpy as np

SEED = 0x5EED
MASK = (1 << 64) - 1

def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & MASK
    return h


def uniforms(name, n, seed=SEED, chunk=1 << 23):
    """n uniforms in [0,1) as float64 (each exactly k * 2**-24)."""
    key = np.uint64(fnv1a64(name) ^ seed)
    out = np.empty(n, dtype=np.float64)
    with np.errstate(over="ignore"):
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            i = np.arange(s + 1, e + 1, dtype=np.uint64)
            z = key + i * np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
            out[s:e] = (z >> np.uint64(40)).astype(np.float64) * 2.0**-24
    return out


def init_tensor(name, shape, seed=SEED):
    """The value of state-dict tensor `name` (float32 / int64 numpy array)."""
    shape = tuple(shape)
    if name.endswith("num_batches_tracked"):
        return np.zeros(shape, dtype=np.int64)
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    u = uniforms(name, n, seed)
    if name.endswith(".weight") and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        v = (2.0 * u - 1.0) * math.sqrt(6.0 / fan_in)
    elif name.endswith(".weight"):
        v = 0.5 + u
    elif name.endswith(".bias") or name.endswith(".running_mean"):
        v = (2.0 * u - 1.0) * 0.1
    elif name.endswith(".running_var"):
        v = 0.5 + u
    else:
        raise ValueError(f"no init rule for {name}")
    return v.astype(np.float32).reshape(shape)
