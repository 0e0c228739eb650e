"""Hand-built classifiers with known answers, and an in-memory eval split (data contract).

Images carry what the hand-built models read:
- channel 2 is constant: the class the model predicts (so shifts and crops keep it);
- channel 0 holds a unit impulse at (0, 0) (`impulse_images`) or a row ramp and channel 1 a
  column ramp (`ramp_images`), from which a model can read how the image was moved.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np

NUM_CLASSES = 10


def impulse_images(predicted, size: int = 32) -> np.ndarray:
    predicted = np.asarray(predicted)
    x = np.zeros((len(predicted), size, size, 3), np.float32)
    x[:, 0, 0, 0] = 1.0
    x[..., 2] = predicted[:, None, None]
    return x


def ramp_images(predicted, size: int = 32) -> np.ndarray:
    predicted = np.asarray(predicted)
    x = np.zeros((len(predicted), size, size, 3), np.float32)
    x[..., 0] = np.arange(size, dtype=np.float32)[:, None]
    x[..., 1] = np.arange(size, dtype=np.float32)[None, :]
    x[..., 2] = predicted[:, None, None]
    return x


def _one_hot(cls, flip):
    cls = jnp.where(flip, (cls + 1) % NUM_CLASSES, cls)
    return 10.0 * jnp.eye(NUM_CLASSES)[cls]


def _encoded_class(images):
    return jnp.clip(jnp.round(jnp.mean(images[..., 2], axis=(1, 2))), 0, NUM_CLASSES - 1).astype(
        jnp.int32
    )


def invariant_model(images):
    """Predicts the class written in channel 2: invariant to every shift and crop."""
    return _one_hot(_encoded_class(images), False)


def constant_model(images):
    """Always class 0."""
    return jnp.zeros((images.shape[0], NUM_CLASSES)).at[:, 0].set(1.0)


def estimated_shift(images):
    """(N, 2) circular shift of the channel-0 impulse, from the phase of the first harmonic
    (exact for integer and Fourier fractional shifts), in [0, size)."""
    h, w = images.shape[1:3]
    x = images[..., 0]
    ang_y = 2 * math.pi * jnp.arange(h) / h
    ang_x = 2 * math.pi * jnp.arange(w) / w
    py = jnp.arctan2(
        jnp.sum(x * jnp.sin(ang_y)[:, None], (1, 2)), jnp.sum(x * jnp.cos(ang_y)[:, None], (1, 2))
    )
    px = jnp.arctan2(
        jnp.sum(x * jnp.sin(ang_x)[None], (1, 2)), jnp.sum(x * jnp.cos(ang_x)[None], (1, 2))
    )
    return jnp.stack([jnp.mod(py * h / (2 * math.pi), h), jnp.mod(px * w / (2 * math.pi), w)], -1)


def _circular_close(a, b, period, tol):
    d = jnp.mod(a - b + period / 2, period) - period / 2
    return jnp.abs(d) < tol


def fails_at_shift(target, tol: float = 0.05):
    """A model that is right everywhere except at the circular shift `target` (dy, dx)."""

    def model(images):
        h, w = images.shape[1:3]
        est = estimated_shift(images)
        hit = _circular_close(est[:, 0], target[0], h, tol) & _circular_close(
            est[:, 1], target[1], w, tol
        )
        return _one_hot(_encoded_class(images), hit)

    return model


def fails_when_moved(tol: float = 0.05):
    """Right only on unshifted images (every shift fails)."""

    def model(images):
        h, w = images.shape[1:3]
        est = estimated_shift(images)
        still = _circular_close(est[:, 0], 0.0, h, tol) & _circular_close(est[:, 1], 0.0, w, tol)
        return _one_hot(_encoded_class(images), ~still)

    return model


def fails_at_crop_offset(target, size: int, margin: int, tol: float = 0.25):
    """For `ramp_images` resized (linearly) to size + 2 margin: wrong on exactly the window
    at offset `target`; the window's centre pixel tells the offset."""
    scale = size / (size + 2 * margin)

    def model(images):
        c = size // 2
        oy = (images[:, c, c, 0] + 0.5) / scale - 0.5 - c
        ox = (images[:, c, c, 1] + 0.5) / scale - 0.5 - c
        hit = (jnp.abs(oy - target[0]) < tol) & (jnp.abs(ox - target[1]) < tol)
        return _one_hot(_encoded_class(images), hit)

    return model


# ----------------------------------------------------------------------------- data


def eval_batches(images, labels, global_batch: int, *, process_index=0, process_count=1):
    """Local batches following `data.create_eval_iterator`'s contract: padded with mask
    False, every example exactly once over all processes, same batch count everywhere."""
    n = len(labels)
    local = global_batch // process_count
    steps = -(-n // global_batch)
    for s in range(steps):
        first = s * global_batch + process_index * local
        rows = np.arange(first, first + local)
        mask = rows < n
        idx = np.where(mask, rows, 0)
        yield {
            "image": images[idx],
            "label": np.asarray(labels)[idx].astype(np.int32),
            "mask": mask,
        }


def fake_source(images, labels, name="fake"):
    """(info, eval_iterator_fn, eval_steps_fn) for `run_shift_robustness`."""
    images = np.asarray(images, np.float32)
    info = SimpleNamespace(
        num_classes=NUM_CLASSES,
        num_train=0,
        num_eval=len(labels),
        image_size=images.shape[1],
        name=name,
    )

    def iterator(config, *, process_index, process_count):
        return eval_batches(
            images,
            labels,
            config.eval_batch_size,
            process_index=process_index,
            process_count=process_count,
        )

    def steps(info_, config, process_count):
        return -(-len(labels) // config.eval_batch_size)

    return info, iterator, steps
