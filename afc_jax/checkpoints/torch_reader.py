"""Safe, torch-free reader for PyTorch ``.pth`` checkpoints (zip format, torch >= 1.6).

A PyTorch checkpoint written by ``torch.save`` is a zip archive with one top-level
folder holding

* ``data.pkl``    -- a pickle of the saved object; tensors appear as calls to
  ``torch._utils._rebuild_tensor_v2`` (or ``_v3``) whose first argument is a
  *persistent id* ``('storage', storage_type, key, location, numel)``;
* ``data/<key>``  -- the raw bytes of each storage;
* ``byteorder``   -- ``little`` or ``big`` (optional; little when absent).

``pickle`` can run arbitrary code while loading, so this module never hands the
file to an ordinary unpickler and never imports torch.  Before anything is
built, every opcode of the stream is checked against an allow-list, and every
global the stream names is resolved by :class:`_SafeUnpickler.find_class`
against a small fixed table of harmless stand-ins defined here (tensor rebuild
functions, storage and dtype markers, ``OrderedDict``, ``argparse.Namespace``
and a few plain builtin containers).  Anything else raises
:class:`UnsafeCheckpointError` before it can be called.

Tensors are first recorded as lightweight descriptions (storage, dtype,
offset, shape, strides); their bytes are read and copied into C-contiguous
numpy arrays only when the caller asks for them, so
:func:`read_torch_checkpoint` does not materialise optimizer state it throws
away.

Every failure caused by the file's content surfaces as
:class:`CheckpointFormatError` (or its subclass :class:`UnsafeCheckpointError`).
Only errors from opening the path itself (missing file, permission denied,
a directory) propagate as the usual :class:`OSError` subclasses.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import reprlib
import warnings
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

__all__ = [
    "CheckpointFormatError",
    "UnsafeCheckpointError",
    "load_torch_file",
    "read_torch_checkpoint",
]


class CheckpointFormatError(ValueError):
    """The file is not a readable PyTorch zip checkpoint (corrupt, truncated, wrong format...)."""


class UnsafeCheckpointError(CheckpointFormatError):
    """The pickle references a global or opcode that is not on the allow-list."""


# --------------------------------------------------------------------------- limits

# Largest ``data.pkl`` accepted (the pickle only holds structure, never tensor bytes).
_MAX_PICKLE_BYTES = 256 << 20
# Tensors may be views (even stride-0 expansions) of their storage, so the bytes
# produced can exceed the bytes stored; cap the total at this slack plus a multiple
# of the storage bytes actually read, so a tiny hostile file cannot demand terabytes.
_OUTPUT_SLACK_BYTES = 1 << 30
_OUTPUT_STORAGE_FACTOR = 4
_MAX_NDIM = 64  # numpy's limit
# A deflate stream cannot expand more than ~1032x; a member claiming more is lying.
_MAX_COMPRESSION_RATIO = 1100
_SHOWN_KEYS = 30  # how many keys an error message lists at most

_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
_RESAVE_HINT = (
    "load it once with torch in a trusted environment and re-save it with "
    "torch.save(obj, path) (torch>=1.6 writes the zip format this reader understands)"
)

# --------------------------------------------------------------------------- dtypes

# torch dtype name (as pickled: global ``torch.<name>``) -> numpy dtype
_TORCH_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "int64": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "int16": np.dtype(np.int16),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "bool": np.dtype(np.bool_),
    "complex64": np.dtype(np.complex64),
    "complex128": np.dtype(np.complex128),
    "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "float8_e4m3fnuz": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "float8_e5m2fnuz": np.dtype(ml_dtypes.float8_e5m2fnuz),
}

# legacy typed storage class name (global ``torch.<name>``) -> torch dtype name
_STORAGE_CLASSES: dict[str, str] = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}


# --------------------------------------------------------------------------- stand-ins
#
# Everything the pickle can reach is either a builtin value built by the opcodes
# themselves or one of the objects below.  All of them use __slots__ (no instance
# __dict__) and define __setstate__, so a BUILD opcode can never plant attributes
# on them (or on the shared module-level stand-ins).


class _Marker:
    """A storage class or dtype named by the pickle; inert, not callable."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: np.dtype):
        self.name = name
        self.dtype = dtype

    def __setstate__(self, state):
        raise CheckpointFormatError(f"unexpected BUILD on {self.name}")

    def __repr__(self):
        return f"<{self.name}>"


class _SafeCallable:
    """Wraps one of our own rebuild helpers; immune to BUILD."""

    __slots__ = ("_fn", "name")

    def __init__(self, name: str, fn):
        self.name = name
        self._fn = fn

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def __setstate__(self, state):
        raise CheckpointFormatError(f"unexpected BUILD on {self.name}")

    def __repr__(self):
        return f"<{self.name}>"


class _ODict(dict):
    """Stand-in for ``collections.OrderedDict``; keeps BUILD state (``_metadata``) aside."""

    __slots__ = ("_pickled_state",)

    def __setstate__(self, state):
        self._pickled_state = state


class _Namespace:
    """Stand-in for ``argparse.Namespace``: records attributes without setting them."""

    __slots__ = ("fields",)

    def __init__(self, *args, **kwargs):
        self.fields = dict(kwargs)

    def __setstate__(self, state):
        if not hasattr(self, "fields"):  # created by NEWOBJ, __init__ not run
            self.fields = {}
        if isinstance(state, dict):
            self.fields.update(state)


class _Storage:
    """A storage record: zip member + default dtype + size, bytes read lazily.

    ``pending`` counts tensor views of it not yet materialised, so that its bytes can be
    dropped from the cache as soon as the last one has been copied out.
    """

    __slots__ = ("dtype", "key", "member", "nbytes", "pending")

    def __init__(self, key, dtype, nbytes, member):
        self.key = key
        self.dtype = dtype
        self.nbytes = nbytes
        self.member = member
        self.pending = 0

    def __setstate__(self, state):
        raise CheckpointFormatError(f"unexpected BUILD on storage {self.key!r}")


class _Tensor:
    """A validated, not yet materialised tensor view of a storage."""

    __slots__ = ("conj", "dtype", "neg", "numel", "offset", "shape", "storage", "strides")

    def __setstate__(self, state):
        pass  # torch itself never sets state on plain tensors; ignore harmlessly


def _as_int(value, what: str) -> int:
    if type(value) is not int:  # bool and int subclasses are rejected on purpose
        raise CheckpointFormatError(f"{what} must be an int, got {type(value).__name__}")
    return value


def _as_int_tuple(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)):
        raise CheckpointFormatError(f"{what} must be a tuple of ints, got {type(value).__name__}")
    if len(value) > _MAX_NDIM:
        raise CheckpointFormatError(f"{what} has {len(value)} dimensions (max {_MAX_NDIM})")
    return tuple(_as_int(v, what) for v in value)


def _make_tensor(storage, storage_offset, size, stride, dtype=None, metadata=None) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise CheckpointFormatError(
            f"tensor rebuild got {type(storage).__name__} instead of a storage record"
        )
    if dtype is None:
        dtype = storage.dtype
    offset = _as_int(storage_offset, "storage offset")
    shape = _as_int_tuple(size, "tensor size")
    strides = _as_int_tuple(stride, "tensor stride")
    if len(shape) != len(strides):
        raise CheckpointFormatError(
            f"tensor size {shape} and stride {strides} have different lengths"
        )
    if offset < 0 or any(s < 0 for s in shape) or any(s < 0 for s in strides):
        raise CheckpointFormatError(
            f"negative storage offset/size/stride (offset={offset}, size={shape}, stride={strides})"
        )
    available = storage.nbytes // dtype.itemsize  # elements of `dtype` in the storage
    numel = math.prod(shape)
    if numel == 0:
        last = offset - 1  # an empty view may sit right at the end of its storage
    else:
        last = offset + sum((n - 1) * st for n, st in zip(shape, strides))
    if offset > available or last >= available:
        raise CheckpointFormatError(
            f"tensor view (offset={offset}, size={shape}, stride={strides}) reaches element "
            f"{last} but storage {storage.key!r} holds only {available} elements of {dtype}"
        )
    conj = neg = False
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise CheckpointFormatError(f"tensor metadata must be a dict, got {_brief(metadata)}")
        conj = bool(metadata.get("conj", False))
        neg = bool(metadata.get("neg", False))
    storage.pending += 1
    t = _Tensor()
    t.storage, t.dtype, t.offset, t.shape, t.strides = storage, dtype, offset, shape, strides
    t.numel, t.conj, t.neg = numel, conj, neg
    return t


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _make_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage,
    storage_offset,
    size,
    stride,
    requires_grad=False,
    backward_hooks=None,
    metadata=None,
):
    return _make_tensor(storage, storage_offset, size, stride, metadata=metadata)


def _rebuild_tensor_v3(
    storage,
    storage_offset,
    size,
    stride,
    requires_grad,
    backward_hooks,
    dtype,
    metadata=None,
):
    if not isinstance(dtype, _Marker):
        raise CheckpointFormatError(
            f"_rebuild_tensor_v3 expects a torch dtype, got {_brief(dtype)}"
        )
    return _make_tensor(storage, storage_offset, size, stride, dtype.dtype, metadata)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, _Tensor):
        raise CheckpointFormatError(f"Parameter rebuild got {type(data).__name__}, not a tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return _rebuild_parameter(data)


def _safe_set(items=()):
    if not isinstance(items, (list, tuple)):
        raise CheckpointFormatError("set() in the pickle must be built from a list")
    return set(items)


def _safe_frozenset(items=()):
    if not isinstance(items, (list, tuple)):
        raise CheckpointFormatError("frozenset() in the pickle must be built from a list")
    return frozenset(items)


def _safe_complex(real=0.0, imag=0.0):
    if not all(isinstance(v, (int, float)) for v in (real, imag)):
        raise CheckpointFormatError("complex() in the pickle must be built from numbers")
    return complex(real, imag)


def _safe_codecs_encode(text, encoding="utf-8"):
    # protocol-2 pickles encode ``bytes`` as _codecs.encode(str, 'latin1')
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointFormatError("_codecs.encode in the pickle is only allowed for latin1 bytes")
    return text.encode("latin1")


def _build_allowed_globals() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): _ODict,
        ("argparse", "Namespace"): _Namespace,
    }
    for fn in (
        _rebuild_tensor,
        _rebuild_tensor_v2,
        _rebuild_tensor_v3,
        _rebuild_parameter,
        _rebuild_parameter_with_state,
    ):
        name = fn.__name__
        table[("torch._utils", name)] = _SafeCallable(f"torch._utils.{name}", fn)
    for name, fn in (
        ("set", _safe_set),
        ("frozenset", _safe_frozenset),
        ("complex", _safe_complex),
    ):
        table[("builtins", name)] = _SafeCallable(f"builtins.{name}", fn)
    table[("_codecs", "encode")] = _SafeCallable("_codecs.encode", _safe_codecs_encode)
    for cls_name, dtype_name in _STORAGE_CLASSES.items():
        table[("torch", cls_name)] = _Marker(f"torch.{cls_name}", _TORCH_DTYPES[dtype_name])
    untyped = _Marker("torch.UntypedStorage", np.dtype(np.uint8))
    table[("torch", "UntypedStorage")] = untyped
    table[("torch.storage", "UntypedStorage")] = untyped
    for dtype_name, dtype in _TORCH_DTYPES.items():
        table[("torch", dtype_name)] = _Marker(f"torch.{dtype_name}", dtype)
    return table


_ALLOWED_GLOBALS = _build_allowed_globals()

# Opcodes the stream may use.  Left out on purpose: INST/OBJ (old-style class
# instantiation), EXT1/2/4 (copyreg extension registry), text PERSID and the
# protocol-5 out-of-band buffer opcodes -- torch never writes any of them.
_ALLOWED_OPCODES = frozenset(
    {
        # framing and stack
        "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
        # scalars
        "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2",
        "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
        # strings and bytes
        "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
        "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
        "BYTEARRAY8",
        # containers
        "EMPTY_LIST", "APPEND", "APPENDS", "LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1",
        "TUPLE2", "TUPLE3", "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "EMPTY_SET",
        "ADDITEMS", "FROZENSET",
        # memo
        "GET", "BINGET", "LONG_BINGET", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE",
        # objects (globals are vetted by find_class, pids by persistent_load)
        "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX", "BINPERSID",
    }
)  # fmt: skip
_PUT_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlevel = 3


def _brief(obj) -> str:
    """A short repr of a value from the file, safe for huge or deeply nested values."""
    try:
        return _REPR.repr(obj)
    except (ValueError, TypeError, RecursionError, MemoryError):  # e.g. a 5000-digit int
        return f"<{type(obj).__name__}>"


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:197] + "..."


def _show_keys(keys) -> str:
    shown = [_brief(k) for k in list(keys)[:_SHOWN_KEYS]]
    more = len(keys) - len(shown)
    return "[" + ", ".join(shown) + (f", ... ({more} more)" if more > 0 else "") + "]"


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: _Archive):
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._archive = archive

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            pass
        hint = ""
        if str(module).split(".")[0] in ("torch", "__main__", "__torch__"):
            hint = (
                " If the file holds a whole pickled nn.Module or another custom object, "
                "load it with torch in a trusted environment and re-save only "
                "model.state_dict()."
            )
        raise UnsafeCheckpointError(
            f"{self._archive.display}: refuses to load global '{module}.{name}': only "
            "tensor-rebuild functions, storage types, dtypes, OrderedDict and argparse.Namespace "
            "(plus set/frozenset/complex) are allowed; this file may be malicious, do not open "
            f"it with torch.load(weights_only=False) unless you trust its source.{hint}"
        )

    def persistent_load(self, pid):
        return self._archive.storage_from_pid(pid)


# --------------------------------------------------------------------------- archive


class _Archive:
    """An open checkpoint zip; unpickles ``data.pkl`` and materialises tensors."""

    def __init__(self, display: str, file):
        self.display = display
        self._file = file
        self._zip: zipfile.ZipFile | None = None
        self._storages: dict[str, _Storage] = {}
        self._storage_bytes: dict[str, np.ndarray] = {}
        self._read_keys: set[str] = set()
        self._loaded_bytes = 0
        self._output_bytes = 0
        self.prefix = ""
        self.big_endian = False
        self._file_size = os.fstat(file.fileno()).st_size

    # -- context management
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._zip is not None:
            self._zip.close()

    def error(self, message: str) -> CheckpointFormatError:
        return CheckpointFormatError(f"{self.display}: {message}")

    # -- opening
    def _reject_non_zip(self):
        self._file.seek(0)
        head = self._file.read(512)
        if head.startswith(_LEGACY_MAGIC):
            raise self.error(
                "is in the legacy (pre-1.6, non-zip) torch serialization format, which this "
                f"reader does not support; {_RESAVE_HINT}."
            )
        if len(head) >= 262 and head[257:262] == b"ustar":
            raise self.error(
                "is a tar archive (the oldest torch serialization format), not a PyTorch zip "
                f"checkpoint; {_RESAVE_HINT}."
            )
        if head.startswith(b"\x80"):
            raise self.error(
                "is a plain pickle, not a PyTorch zip checkpoint (torch>=1.6 format); "
                f"{_RESAVE_HINT}."
            )
        if not head:
            raise self.error("is empty, not a PyTorch zip checkpoint (torch>=1.6 format).")
        raise self.error(
            "is not a PyTorch zip checkpoint (torch>=1.6 format); re-save it with "
            "torch.save(obj, path), or check that the download is complete."
        )

    def open(self):
        head = self._file.read(4)
        if not head.startswith(b"PK"):
            self._reject_non_zip()
        self._file.seek(0)
        try:
            self._zip = zipfile.ZipFile(self._file)
        except Exception as exc:  # BadZipFile, truncated, bogus central directory, ...
            raise self.error(
                f"is not a valid zip archive ({_describe(exc)}); the file is truncated or "
                "corrupt, or not a torch>=1.6 checkpoint: re-download it or re-save it with "
                "torch.save(obj, path)."
            ) from exc
        names = self._zip.namelist()
        prefixes = sorted(
            {n[: -len("/data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1}
        )
        # TorchScript archives have <folder>/constants.pkl and <folder>/code/...
        for n in names:
            parts = n.split("/", 2)
            if len(parts) >= 2 and (parts[1] == "code" or parts[1:] == ["constants.pkl"]):
                raise self.error(
                    "is a TorchScript archive (torch.jit.save), not a torch.save checkpoint; "
                    "load it with torch.jit.load in a trusted environment and save its "
                    "state_dict() with torch.save(module.state_dict(), path)."
                )
        if len(prefixes) != 1:
            what = "no" if not prefixes else f"{len(prefixes)}"
            raise self.error(
                f"is a zip archive but has {what} '<folder>/data.pkl' record(s) (members: "
                f"{_show_keys(names)}); it is not a PyTorch checkpoint written by torch.save."
            )
        self.prefix = prefixes[0]
        order_name = f"{self.prefix}/byteorder"
        if order_name in names:
            order = self._read_member(order_name, 64).strip()
            if order not in (b"little", b"big"):
                raise self.error(f"has an unknown byteorder record {order[:20]!r}")
            self.big_endian = order == b"big"

    def _check_member_sizes(self, info: zipfile.ZipInfo) -> None:
        if info.compress_type == zipfile.ZIP_STORED:
            plausible = info.compress_size == info.file_size
        else:
            plausible = info.file_size <= _MAX_COMPRESSION_RATIO * info.compress_size + 65536
        if not plausible or info.compress_size > self._file_size:
            raise self.error(
                f"zip member {info.filename!r} declares impossible sizes ({info.compress_size} "
                f"bytes compressed, {info.file_size} uncompressed, in a {self._file_size}-byte "
                "file); the file is corrupt."
            )

    def _read_member(self, name: str, limit: int) -> bytes:
        info = self._zip.getinfo(name)
        self._check_member_sizes(info)
        with self._zip.open(info) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise self.error(f"zip member {name!r} is larger than {limit} bytes")
        return data

    # -- unpickling
    def unpickle(self):
        try:
            data = self._read_member(f"{self.prefix}/data.pkl", _MAX_PICKLE_BYTES)
        except CheckpointFormatError:
            raise
        except Exception as exc:
            raise self.error(
                f"cannot read data.pkl from the zip ({_describe(exc)}); the file is corrupt or "
                "truncated: re-download or re-save it."
            ) from exc
        # Protocol-0 STRING opcodes with odd escapes make pickle emit DeprecationWarnings;
        # a hostile file must not be able to spam (or, under -W error, derail) the caller.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._check_opcodes(data)
            return self._load_pickle(data)

    def _load_pickle(self, data: bytes):
        try:
            return _SafeUnpickler(data, self).load()
        except CheckpointFormatError:
            raise
        except Exception as exc:  # UnpicklingError, EOFError, TypeError, MemoryError, ...
            raise self.error(
                f"data.pkl is not a valid checkpoint pickle ({_describe(exc)}); the file is "
                "corrupt: re-download it or re-save it with torch.save(obj, path)."
            ) from exc

    def _check_opcodes(self, data: bytes):
        try:
            for opcode, arg, _pos in pickletools.genops(data):
                if opcode.name not in _ALLOWED_OPCODES:
                    raise UnsafeCheckpointError(
                        f"{self.display}: refuses pickle opcode {opcode.name}: torch.save never "
                        "writes it and this reader does not allow it; this file may be "
                        "malicious or was not written by torch.save."
                    )
                # A memo index can never legitimately exceed the stream length; huge ones
                # would make the C unpickler allocate a gigantic memo table.
                if opcode.name in _PUT_OPCODES and not (0 <= int(arg) < len(data)):
                    raise self.error(f"data.pkl uses an absurd memo index {arg}; file is corrupt.")
        except CheckpointFormatError:
            raise
        except Exception as exc:
            raise self.error(
                f"data.pkl is not a valid pickle stream ({_describe(exc)}); the file is corrupt "
                "or truncated: re-download it or re-save it with torch.save(obj, path)."
            ) from exc

    def storage_from_pid(self, pid) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise self.error(
                f"unsupported persistent id {_brief(pid)} (expected ('storage', type, key, "
                "location, numel))"
            )
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _Marker):
            raise self.error(f"storage record has an invalid storage type {_brief(storage_type)}")
        if not isinstance(key, str):
            raise self.error(f"storage key must be a str, got {_brief(key)}")
        numel = _as_int(numel, "storage numel")
        dtype = storage_type.dtype
        if numel < 0:
            raise self.error(f"storage {key!r} has a negative size {numel}")
        nbytes = numel * dtype.itemsize
        cached = self._storages.get(key)
        if cached is not None:
            if cached.dtype != dtype or cached.nbytes != nbytes:
                raise self.error(
                    f"storage {key!r} is described inconsistently ({cached.dtype}, "
                    f"{cached.nbytes} bytes vs {dtype}, {nbytes} bytes)"
                )
            return cached
        member = f"{self.prefix}/data/{key}"
        try:
            info = self._zip.getinfo(member)
        except KeyError:
            raise self.error(
                f"storage record {member!r} is missing from the zip; the checkpoint is "
                "incomplete or corrupt: re-download it or re-save it with torch.save."
            ) from None
        self._check_member_sizes(info)
        if info.file_size < nbytes:
            raise self.error(
                f"storage record {member!r} has {info.file_size} bytes but {numel} elements of "
                f"{dtype} need {nbytes}; the file is truncated or corrupt."
            )
        storage = _Storage(key, dtype, nbytes, member)
        self._storages[key] = storage
        return storage

    # -- materialisation
    def _storage_array(self, storage: _Storage) -> np.ndarray:
        raw = self._storage_bytes.get(storage.key)
        if raw is None:
            with self._zip.open(storage.member) as f:
                data = f.read(storage.nbytes)
            if len(data) != storage.nbytes:
                raise self.error(
                    f"storage record {storage.member!r} is truncated ({len(data)} of "
                    f"{storage.nbytes} bytes)"
                )
            raw = np.frombuffer(data, dtype=np.uint8)
            self._storage_bytes[storage.key] = raw
            if storage.key not in self._read_keys:
                self._read_keys.add(storage.key)
                self._loaded_bytes += storage.nbytes
        return raw

    def _release(self, storage: _Storage) -> None:
        if storage.pending <= 0:
            self._storage_bytes.pop(storage.key, None)

    def _typed_view(self, raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
        usable = (raw.size // dtype.itemsize) * dtype.itemsize
        raw = raw[:usable]
        if self.big_endian and dtype.itemsize > 1:
            # swap each scalar component (both halves of a complex number separately)
            unit = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
            swapped = raw.view(np.dtype(f"<u{unit}")).byteswap()
            return swapped.view(dtype)
        return raw.view(dtype)

    def tensor_to_array(self, t: _Tensor) -> np.ndarray:
        t.storage.pending -= 1
        if t.numel == 0:
            self._release(t.storage)
            return np.zeros(t.shape, dtype=t.dtype)
        out_bytes = t.numel * t.dtype.itemsize
        raw = self._storage_array(t.storage)
        budget = _OUTPUT_SLACK_BYTES + _OUTPUT_STORAGE_FACTOR * self._loaded_bytes
        if self._output_bytes + out_bytes > budget:
            raise self.error(
                f"tensors would need {self._output_bytes + out_bytes} bytes from "
                f"{self._loaded_bytes} stored bytes; refusing (corrupt or hostile file)."
            )
        self._output_bytes += out_bytes
        typed = self._typed_view(raw, t.dtype)
        view = np.lib.stride_tricks.as_strided(
            typed[t.offset :],
            shape=t.shape,
            strides=tuple(s * t.dtype.itemsize for s in t.strides),
            writeable=False,
        )
        arr = np.array(view, dtype=t.dtype, order="C", copy=True)
        del typed, view, raw
        self._release(t.storage)
        if t.conj and arr.dtype.kind == "c":
            np.conjugate(arr, out=arr)
        if t.neg:
            np.negative(arr, out=arr)
        return arr

    def storage_to_array(self, s: _Storage) -> np.ndarray:
        raw = self._storage_array(s)
        self._output_bytes += s.nbytes
        arr = np.array(self._typed_view(raw, s.dtype), copy=True)
        self._release(s)
        return arr

    def materialize(self, obj, memo: dict[int, Any] | None = None):
        """Turn the stand-in tree into plain Python containers and numpy arrays."""
        if memo is None:
            memo = {}
        oid = id(obj)
        if oid in memo:
            return memo[oid]
        if isinstance(obj, _Tensor):
            result = memo[oid] = self.tensor_to_array(obj)
        elif isinstance(obj, _Storage):
            result = memo[oid] = self.storage_to_array(obj)
        elif isinstance(obj, dict):
            result = memo[oid] = {}
            for k, v in obj.items():
                if isinstance(k, tuple):
                    k = self.materialize(k, memo)
                elif not isinstance(k, _PLAIN_KEY_TYPES):
                    raise self.error(f"unsupported dict key of type {type(k).__name__}")
                result[k] = self.materialize(v, memo)
        elif isinstance(obj, list):
            result = memo[oid] = []
            result.extend(self.materialize(v, memo) for v in obj)
        elif isinstance(obj, tuple):
            result = memo[oid] = tuple(self.materialize(v, memo) for v in obj)
        elif isinstance(obj, _Namespace):
            result = memo[oid] = {}
            for k, v in getattr(obj, "fields", {}).items():
                result[k] = self.materialize(v, memo)
        elif isinstance(obj, (set, frozenset)):
            items = [self.materialize(v, memo) for v in obj]
            result = memo[oid] = type(obj)(items)
        elif isinstance(obj, _Marker):
            result = obj.name
        elif isinstance(obj, (_SafeCallable, type)):
            result = repr(obj)
        else:
            result = obj  # int, float, str, bytes, bool, None, complex, bytearray
        return result


_PLAIN_KEY_TYPES = (str, int, float, complex, bytes, type(None))


def _run(path, action):
    """Open ``path`` and run ``action(archive)``; map every content failure to our errors."""
    display = os.fsdecode(os.fspath(path))
    # Opening the path is outside the try: a missing file stays a FileNotFoundError.
    with open(path, "rb") as file, _Archive(display, file) as archive:
        try:
            archive.open()
            return action(archive)
        except CheckpointFormatError as exc:
            if str(exc).startswith(f"{display}: "):
                raise
            # raised by a stand-in that does not know the path: say which file it was
            raise type(exc)(f"{display}: {exc}") from exc
        except Exception as exc:
            raise CheckpointFormatError(
                f"{display}: could not be read as a PyTorch checkpoint ({_describe(exc)}); "
                "the file is corrupt or truncated: re-download it or re-save it with "
                "torch.save(obj, path)."
            ) from exc


# --------------------------------------------------------------------------- public API


def load_torch_file(path) -> object:
    """Load a torch>=1.6 ``.pth`` file without torch and without executing pickle code.

    Returns the whole pickled object with every tensor replaced by a C-contiguous
    numpy array (same dtype, shape and values; bfloat16/float8 via ``ml_dtypes``).
    ``dict``/``OrderedDict`` become ``dict``, lists and tuples are kept,
    ``argparse.Namespace`` becomes a ``dict`` of its attributes, bare storages become
    1-D arrays and dtype/storage-type markers become strings such as ``"torch.float32"``.

    Raises:
        UnsafeCheckpointError: the pickle names a global or opcode that is not allowed.
        CheckpointFormatError: the file is not a readable torch zip checkpoint.
        OSError: the path itself cannot be opened.
    """

    def action(archive: _Archive):
        tree = archive.unpickle()
        try:
            return archive.materialize(tree)
        except CheckpointFormatError:
            raise
        except Exception as exc:  # RecursionError on absurd nesting, MemoryError, ...
            raise archive.error(
                f"cannot convert the checkpoint contents ({_describe(exc)})"
            ) from exc

    return _run(path, action)


_WHICH_KEYS = {
    "model": ("model", "state_dict"),
    "model_ema": ("model_ema", "state_dict_ema"),
}
_MODULE_PREFIX = "module."


def read_torch_checkpoint(path, which: str = "auto") -> dict[str, np.ndarray]:
    """Read a flat ``name -> numpy array`` state dict from a torch ``.pth`` checkpoint.

    The file may hold a raw state dict (``{name: tensor}``) or a training checkpoint
    dict with ``"model"`` (alias ``"state_dict"``) and optionally ``"model_ema"``
    (alias ``"state_dict_ema"``); other entries (``"optimizer"``, ``"epoch"``,
    ``"scaler"``, ``"args"``, ...) are ignored and their tensors never read.

    Args:
        path: the ``.pth`` file.
        which: ``"auto"`` picks ``"model"`` (or ``"state_dict"``) when present and the
            top-level dict itself otherwise; ``"model"`` / ``"model_ema"`` pick that
            entry and fail, listing the available top-level keys, when it is absent.

    A ``"module."`` prefix present on every key (DataParallel) is stripped.

    Raises:
        ValueError: ``which`` is not one of the accepted values.
        CheckpointFormatError / UnsafeCheckpointError: see :func:`load_torch_file`; also
            when the selected entry is missing or holds a value that is not a tensor.
    """
    if which not in ("auto", "model", "model_ema"):
        raise ValueError(f"which must be 'auto', 'model' or 'model_ema', got {which!r}")

    def action(archive: _Archive):
        top = archive.unpickle()
        if not isinstance(top, dict):
            raise archive.error(
                f"holds a {type(top).__name__}, not a dict; expected a state dict or a "
                "training checkpoint dict with a 'model' entry."
            )
        label, state = _select_state_dict(archive, top, which)
        _check_state_dict(archive, top, label, state)
        return _materialize_state_dict(archive, state)

    return _run(path, action)


def _select_state_dict(archive: _Archive, top: dict, which: str) -> tuple[str, dict]:
    """(label for errors, the state dict) that `which` names in the checkpoint's top dict."""
    if which == "auto":
        for name in _WHICH_KEYS["model"]:
            if isinstance(top.get(name), dict):
                return f"entry {name!r}", top[name]
        return "the top-level dict", top
    for name in _WHICH_KEYS[which]:
        if name in top:
            label, state = f"entry {name!r}", top[name]
            break
    else:
        raw = which == "model" and top and all(isinstance(v, _Tensor) for v in top.values())
        hint = " It looks like a raw state dict: use which='auto'." if raw else ""
        raise archive.error(
            f"has no {which!r} entry (accepted names: {list(_WHICH_KEYS[which])}); "
            f"available top-level keys: {_show_keys(list(top))}.{hint}"
        )
    if not isinstance(state, dict):
        raise archive.error(
            f"{label} is a {type(state).__name__}, not a state dict; available "
            f"top-level keys: {_show_keys(list(top))}."
        )
    return label, state


def _check_state_dict(archive: _Archive, top: dict, label: str, state: dict) -> None:
    """A state dict maps string keys to tensors; anything else is refused, saying where."""
    for key, value in state.items():
        if not isinstance(key, str):
            raise archive.error(f"{label} has a non-string key {_brief(key)}; not a state dict.")
        if not isinstance(value, _Tensor):
            extra = (
                f" Available top-level keys: {_show_keys(list(top))}; pass which='model' or "
                "which='model_ema' to pick a state dict."
                if state is top
                else ""
            )
            raise archive.error(
                f"key {key!r} in {label} holds a {type(value).__name__}, not a tensor; "
                f"expected a flat state dict of tensors.{extra}"
            )


def _materialize_state_dict(archive: _Archive, state: dict) -> dict[str, np.ndarray]:
    """Reads every tensor (views of one storage share it); strips a DataParallel prefix."""
    keys = list(state.keys())
    strip = bool(keys) and all(k.startswith(_MODULE_PREFIX) for k in keys)
    result: dict[str, np.ndarray] = {}
    memo: dict[int, Any] = {}
    for key, value in state.items():
        name = key[len(_MODULE_PREFIX) :] if strip else key
        try:
            result[name] = archive.materialize(value, memo)
        except CheckpointFormatError as exc:
            raise type(exc)(f"{exc} (while reading tensor {key!r})") from exc
    return result
