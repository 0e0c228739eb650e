"""Regenerate the small PyTorch checkpoint fixtures in ``tests/checkpoints/data/``.

This script NEEDS torch (``pip install -e ".[fixtures]"``; any CPU build >= 2.1) and is
NOT run by the test-suite: the tests only read the files it wrote, so they run
without torch.  Run it from anywhere:

    python tests/checkpoints/make_torch_fixtures.py

It writes, with a fixed seed:

* ``state_dict.pth``     -- ``nn.Linear(3, 4).state_dict()`` plus float16, bfloat16,
  int64, bool, a transposed (non-contiguous) tensor, two tensors that share one
  storage at different offsets, a 0-d tensor, an empty tensor, complex64 with a
  lazily conjugated view (``conj`` metadata) and a negative-bit view (``neg`` metadata);
* ``state_dict_proto4.pth`` -- the same dict saved with ``pickle_protocol=4``
  (FRAME / MEMOIZE / STACK_GLOBAL opcodes);
* ``train_ckpt.pth``     -- ``{"model", "model_ema", "optimizer", "epoch", "scaler",
  "args"}`` as written by a typical training loop (AdamW state, Namespace args);
* ``dataparallel.pth``   -- a raw state dict whose keys all start with ``module.``;
* ``new_dtypes.pth``     -- uint16 and float8_e4m3fn tensors (``_rebuild_tensor_v3``
  with an UntypedStorage);
* ``parameters.pth``     -- a dict holding ``nn.Parameter`` objects (``_rebuild_parameter``);
* ``legacy.pth``         -- the pre-1.6 non-zip format (must be rejected);
* ``torchscript.pt``     -- a TorchScript archive (must be rejected).

Next to each readable ``X.pth`` it writes ``X.npz`` (or ``X_<entry>.npz``) with the
expected arrays, produced by torch itself via ``.numpy()``; dtypes numpy lacks
(bfloat16, float8) are stored as float32 via ``.float()`` and uint16 as int32, and the
tests cast before comparing.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parent / "data"


def expected(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    out = {}
    for name, t in tensors.items():
        t = t.detach().resolve_conj().resolve_neg()
        if t.dtype in (torch.bfloat16, torch.float8_e4m3fn):
            t = t.float()
        elif t.dtype == torch.uint16:
            t = t.to(torch.int32)
        out[name] = t.numpy().copy()
    return out


def save_npz(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    np.savez(path, **expected(tensors))


def build_state_dict() -> collections.OrderedDict:
    sd = torch.nn.Linear(3, 4).state_dict()  # OrderedDict with _metadata
    sd["half"] = torch.randn(2, 3).half()
    sd["bf16"] = torch.randn(3, 2).bfloat16()
    sd["double"] = torch.randn(2, 2, dtype=torch.float64)
    sd["int64"] = torch.arange(-3, 3, dtype=torch.int64).reshape(2, 3)
    sd["int32"] = torch.tensor([1, -2, 3], dtype=torch.int32)
    sd["uint8"] = torch.tensor([0, 7, 255], dtype=torch.uint8)
    sd["mask"] = torch.tensor([[True, False], [False, True]])
    sd["transposed"] = torch.randn(3, 5).t()  # non-contiguous view
    shared = torch.arange(12, dtype=torch.float32)
    sd["shared_a"] = shared[2:6].view(2, 2)  # offset 2
    sd["shared_b"] = shared[6:12:2]  # offset 6, stride 2
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 3)
    z = torch.randn(3, dtype=torch.complex64)
    sd["complex"] = z
    sd["complex_conj"] = z.conj()  # lazy conj view -> metadata {'conj': True}
    sd["neg_view"] = torch.randn(3, dtype=torch.complex64).conj().imag  # {'neg': True}
    return sd


def main() -> None:
    torch.manual_seed(0)
    DATA.mkdir(parents=True, exist_ok=True)

    sd = build_state_dict()
    torch.save(sd, DATA / "state_dict.pth")
    torch.save(sd, DATA / "state_dict_proto4.pth", pickle_protocol=4)
    save_npz(DATA / "state_dict.npz", sd)

    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    ema = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 2, 5, 5)).sum().backward()
    opt.step()
    ckpt = {
        "model": model.state_dict(),
        "model_ema": ema.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 3,
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
        "args": argparse.Namespace(lr=0.1, model="afc_tiny", drop_path=0.1),
    }
    torch.save(ckpt, DATA / "train_ckpt.pth")
    save_npz(DATA / "train_ckpt_model.npz", ckpt["model"])
    save_npz(DATA / "train_ckpt_model_ema.npz", ckpt["model_ema"])

    dp = collections.OrderedDict(
        (f"module.{k}", v) for k, v in torch.nn.Linear(2, 2).state_dict().items()
    )
    torch.save(dp, DATA / "dataparallel.pth")
    save_npz(DATA / "dataparallel.npz", {k[len("module.") :]: v for k, v in dp.items()})

    new = {
        "u16": torch.tensor([0, 1, 65535], dtype=torch.uint16),
        "f8": torch.tensor([0.5, -2.0, 448.0], dtype=torch.float8_e4m3fn),
    }
    torch.save(new, DATA / "new_dtypes.pth")
    save_npz(DATA / "new_dtypes.npz", new)

    lin = torch.nn.Linear(2, 3)
    torch.save({"weight": lin.weight, "params": [lin.weight, lin.bias]}, DATA / "parameters.pth")
    save_npz(DATA / "parameters.npz", {"weight": lin.weight, "bias": lin.bias})

    torch.save({"a": torch.zeros(2)}, DATA / "legacy.pth", _use_new_zipfile_serialization=False)
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(DATA / "torchscript.pt"))

    total = sum(p.stat().st_size for p in DATA.iterdir())
    print(f"wrote {len(list(DATA.iterdir()))} files, {total} bytes, to {DATA}")


if __name__ == "__main__":
    main()
