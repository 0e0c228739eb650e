"""Shift a real photo by fractions of a pixel and compare AFC with the circular baseline.

    python examples/shift_photo.py                       # random weights, 128x128
    python examples/shift_photo.py --config.image_size=224 \
        --config.checkpoints.afc=ckpt/afc_tiny --config.checkpoints.baseline=ckpt/base_tiny

For each shift it prints the largest change of any logit relative to the largest logit, and
whether the top-1 class survives. AFC's change is float32 round-off (~1e-7); the baseline's is
not. With converted official checkpoints (see README) the classes are ImageNet's.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from ml_collections import config_flags

from afc_jax import checkpoints, models, ops

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    str(Path(__file__).resolve().parents[1] / "configs" / "shift_demo.py"),
    "demo settings",
    lock_config=True,
)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def load_photo(name: str, size: int) -> np.ndarray:
    """A scikit-image sample photo, centre-cropped, resized and ImageNet-normalised (HWC)."""
    import skimage.data
    import skimage.transform

    photo = getattr(skimage.data, name)()
    if photo.ndim != 3 or photo.shape[-1] < 3:
        raise ValueError(f"skimage.data.{name} is not a colour image")
    photo = photo[..., :3].astype(np.float32) / 255.0
    h, w = photo.shape[:2]
    s = min(h, w)
    photo = photo[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    photo = skimage.transform.resize(photo, (size, size), anti_aliasing=True).astype(np.float32)
    return (photo - IMAGENET_MEAN) / IMAGENET_STD


def random_variables(model, size: int, seed: int):
    """Random init with every parameter moved off its init (layer scales and the stem gain
    start at ~0, which would make the blocks nearly invisible)."""
    variables = jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, size, size, 3)))
    leaves, treedef = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [
        leaf + 0.1 * jax.random.normal(k, leaf.shape) * (jnp.mean(jnp.abs(leaf)) + 0.1)
        for leaf, k in zip(leaves, keys)
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def main(argv) -> None:
    del argv
    cfg = _CONFIG.value
    photo = jnp.asarray(load_photo(cfg.photo, cfg.image_size))[None]
    ckpt_dirs = [cfg.checkpoints.afc, cfg.checkpoints.baseline]
    print(
        f"photo: skimage.data.{cfg.photo} at {cfg.image_size}x{cfg.image_size}, "
        f"JAX {jax.__version__} on {jax.devices()[0].platform}"
    )
    rows = []
    for name, ckpt in zip(cfg.models, ckpt_dirs):
        t0 = time.time()
        if ckpt:
            model, variables, _ = checkpoints.load_model(ckpt)
            source = f"weights from {ckpt}"
        else:
            model = models.create(name, num_classes=cfg.num_classes)
            variables = random_variables(model, cfg.image_size, cfg.seed)
            source = "random weights"

        @jax.jit
        def logits_of_shift(shift, variables=variables, model=model):
            return model.apply(variables, ops.fractional_shift(photo, (shift[0], shift[1])))[0]

        base = logits_of_shift(jnp.zeros(2))
        scale = float(jnp.max(jnp.abs(base)))
        top1 = int(jnp.argmax(base))
        print(f"{name}: {source}, compiled and ran in {time.time() - t0:.1f}s")
        for shift in cfg.shifts:
            out = logits_of_shift(jnp.asarray(shift, jnp.float32))
            change = float(jnp.max(jnp.abs(out - base))) / scale
            rows.append((name, shift, change, int(jnp.argmax(out)) == top1))

    print()
    header = f"{'model':34s} {'shift (dy, dx)':>16s} {'max |Δlogit| / max |logit|':>28s}"
    print(f"{header} {'top-1 kept':>10s}")
    for name, shift, change, kept in rows:
        shift_txt = f"({shift[0]:.3g}, {shift[1]:.3g})"
        print(f"{name:34s} {shift_txt:>16s} {change:28.2e} {str(kept):>10s}")
    worst = {name: max(r[2] for r in rows if r[0] == name) for name in cfg.models}
    afc = [n for n in cfg.models if n.startswith("convnext_afc")]
    print()
    for name in afc:
        verdict = "invariant to float32 round-off" if worst[name] < 1e-5 else "NOT invariant"
        print(f"{name}: worst relative logit change {worst[name]:.1e} -> {verdict}")
    for name in cfg.models:
        if name not in afc:
            print(f"{name}: worst relative logit change {worst[name]:.1e}")


if __name__ == "__main__":
    app.run(main)
