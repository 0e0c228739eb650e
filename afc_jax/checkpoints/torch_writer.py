"""Write a state dict as a PyTorch `.pth` file (torch >= 1.6 zip format) without torch.

Used to export afc-jax weights back to the official PyTorch models
(`to_torch_state_dict` + `write_torch_state_dict`), and by the tests to make checkpoint files
on machines without torch. The file holds an `OrderedDict` of tensors, loadable with
`torch.load(path, weights_only=True)`.

Layout written (facts of the format): a zip archive with one top folder holding `data.pkl`
(pickle protocol 2; each tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, requires_grad, hooks)`, storages referenced by persistent id
`("storage", <torch.XStorage>, key, "cpu", numel)`), `data/<key>` with the raw little-endian
bytes of each storage, `byteorder` and `version`.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

_STORAGE_TYPES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int8): "CharStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
    np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
}


class _Global:
    """A reference to a global by name, written as a GLOBAL opcode (never imported)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle only requires reduce functions to be callable
        raise TypeError("placeholder for pickling")


class _StorageRef:
    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel


class _TensorRef:
    def __init__(self, storage: _StorageRef, shape: tuple[int, ...]):
        self.storage, self.shape = storage, shape

    def __reduce__(self):
        stride = tuple(int(s) for s in np.cumprod((1,) + self.shape[::-1])[:-1][::-1])
        args = (self.storage, 0, self.shape, stride, False, OrderedDict())
        return (_Global("torch._utils", "_rebuild_tensor_v2"), args)


class _Pickler(pickle._Pickler):  # the pure-Python pickler lets us emit GLOBALs by name
    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            storage_type = _Global("torch", _STORAGE_TYPES[obj.dtype])
            return ("storage", storage_type, obj.key, "cpu", obj.numel)
        return None

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
            return
        super().save(obj, save_persistent_id)


def write_torch_file(path: str | os.PathLike, obj) -> Path:
    """Writes `obj` to `path` in PyTorch's zip format, numpy arrays becoming tensors.

    `obj` may nest dicts, lists and tuples of arrays, ints, floats, strings, bools and None,
    e.g. a training checkpoint `{"model": state_dict, "model_ema": ..., "epoch": 3}`.
    Supported array dtypes: bfloat16, float16/32/64, int8/16/32/64, uint8, bool.
    """
    path = Path(path)
    blobs: dict[str, bytes] = {}

    def convert(value, where: str):
        if isinstance(value, Mapping):
            return OrderedDict((str(k), convert(v, f"{where}.{k}")) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return type(value)(convert(v, f"{where}[{i}]") for i, v in enumerate(value))
        if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "__array__"):
            array = np.asarray(value).copy(order="C")  # keeps 0-d arrays 0-d
            if array.dtype not in _STORAGE_TYPES:
                raise TypeError(f"{where}: dtype {array.dtype} cannot be written to a .pth file")
            key = str(len(blobs))
            blobs[key] = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            return _TensorRef(_StorageRef(key, array.dtype, array.size), array.shape)
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"{where}: cannot write a {type(value).__name__} to a .pth file")

    converted = convert(obj, "obj")
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(converted)
    top = path.stem or "archive"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{top}/data.pkl", buffer.getvalue())
        zf.writestr(f"{top}/byteorder", "little")
        for key, blob in blobs.items():
            zf.writestr(f"{top}/data/{key}", blob)
        zf.writestr(f"{top}/version", "3\n")
    return path


def write_torch_state_dict(path: str | os.PathLike, state_dict: Mapping[str, np.ndarray]) -> Path:
    """Writes a flat state dict (name -> numpy array) as a `.pth` file."""
    return write_torch_file(path, OrderedDict(state_dict))
