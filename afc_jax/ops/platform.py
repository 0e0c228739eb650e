"""The platform a program is compiled for, which every "auto" implementation choice follows.

`jax.default_backend()` is the platform of the running process. That is not always the
platform the program will run on: compiling ahead of time on a CPU host for a TPU topology
(`benchmarks.tpu_compile`) traces on the CPU, and an "auto" that asked the process would put
the CPU's choices (shift-and-add depthwise convs, CPU filter thresholds) into the TPU program.
So the choices ask `target_platform()` instead: the platform set by the innermost
`targeting(platform)` block around the tracing, else `jax.default_backend()`. `train.py` and the
compile command set it from the mesh's devices (`devices[0].platform`).

Given devices, `targeting` also records their kind (`device_kind`, e.g. "TPU v5 lite"), for
the few choices that differ between chip generations (`target_device_kind`).

The value is read when a model is traced, so `targeting` must enclose the tracing
(`jax.jit(f).lower(...)`, or the first call of a jitted function). jit's cache does not key on
it: trace a function for one platform per jitted object.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax

__all__ = ["PLATFORMS", "normalize_platform", "target_device_kind", "target_platform", "targeting"]

PLATFORMS = ("cpu", "gpu", "tpu")
_ALIASES = {"cuda": "gpu", "rocm": "gpu"}
_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "afc_jax_target_platform", default=None
)
_KIND: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "afc_jax_target_device_kind", default=None
)


def normalize_platform(platform: str) -> str:
    """ "cpu" / "gpu" / "tpu" from a platform or backend name ("cuda" and "rocm" are "gpu")."""
    name = _ALIASES.get(str(platform).lower(), str(platform).lower())
    if name not in PLATFORMS:
        raise ValueError(f"unknown target platform {platform!r}; choose one of {PLATFORMS}")
    return name


def target_platform() -> str:
    """The platform "auto" choices decide for: `targeting`'s, else `jax.default_backend()`."""
    target = _TARGET.get()
    return target if target is not None else normalize_platform(jax.default_backend())


def target_device_kind() -> str | None:
    """The target devices' `device_kind` ("TPU v5 lite", "TPU v5", ...): the one `targeting`
    was given devices of; None when it was given a platform name; the default backend's
    first device's outside any `targeting` block."""
    if _TARGET.get() is None:
        return jax.devices()[0].device_kind
    return _KIND.get()


@contextlib.contextmanager
def targeting(platform):
    """Within the block, "auto" choices decide for `platform` (None: the default backend).

    `platform` may also be a device or a sequence of devices: their first one's platform, and
    its `device_kind` for `target_device_kind`.
    """
    kind = None
    if platform is not None and not isinstance(platform, str):
        first = platform if hasattr(platform, "platform") else next(iter(platform))
        platform, kind = first.platform, getattr(first, "device_kind", None)
    token = _TARGET.set(None if platform is None else normalize_platform(platform))
    kind_token = _KIND.set(kind)
    try:
        yield
    finally:
        _KIND.reset(kind_token)
        _TARGET.reset(token)
