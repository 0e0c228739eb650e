"""The compiled programs of a training run: model, mesh, optimizer, shardings, train/eval steps.

One builder for everything that decides what runs on the devices, shared by `train.py`
(`afc_jax.train.loop`) and the ahead-of-time compile command (`benchmarks.tpu_compile`), so
that what is compiled for a TPU topology on a CPU host is what a pod would run: the same model
and dtype policy (`loop.build_model`), mesh and FSDP shardings (`sharding`), optimizer and
schedule (`optimizer`), EMA and non-finite handling (`state.make_train_step`), and donation of
the state.

The steps are traced for the mesh's platform (`afc_jax.ops.platform.targeting`), so every
"auto" implementation choice of the model decides for the devices the program runs on, not for
the host that compiles it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh, NamedSharding

from afc_jax.ops.platform import normalize_platform, targeting
from afc_jax.train import sharding
from afc_jax.train.optimizer import make_optimizer
from afc_jax.train.state import init_state, make_eval_step, make_train_step

__all__ = ["Programs", "TargetedJit", "abstract_batch", "build_programs"]


class TargetedJit:
    """A jitted function that is always traced for one platform.

    Calling it, `lower`-ing it or `trace`-ing it happens inside `targeting(platform)`, so the
    first call (or an ahead-of-time lowering) resolves "auto" choices for that platform.
    """

    def __init__(self, jitted, target):
        self.jitted = jitted
        self.target = target  # a platform name, or a device (its platform and kind)

    def __call__(self, *args, **kwargs):
        with targeting(self.target):
            return self.jitted(*args, **kwargs)

    def lower(self, *args, **kwargs):
        with targeting(self.target):
            return self.jitted.lower(*args, **kwargs)

    def trace(self, *args, **kwargs):
        with targeting(self.target):
            return self.jitted.trace(*args, **kwargs)


@dataclasses.dataclass(frozen=True)
class Programs:
    """What `build_programs` returns.

    train_step(state, batch, base_rng) -> (state, metrics): the state donated, sharded as
    `state_shardings`; eval_step(params, batch) -> sums (replicated). A batch is
    {"image": float32 (B, S, S, 3), "label": int32 (B,), "mask": bool (B,)} split over every
    device (`batch_shardings`).
    """

    model: Any
    mesh: Mesh
    platform: str
    target_device: Any  # a device of the mesh: its platform and kind drive the "auto" choices
    tx: Any
    schedule: Any
    image_shape: tuple[int, int, int]
    abstract_state: Any  # TrainState of jax.ShapeDtypeStruct
    state_shardings: Any  # TrainState of NamedSharding
    batch_shardings: dict[str, NamedSharding]
    train_step: TargetedJit
    eval_step: TargetedJit

    def init_state(self, rng):
        """The new train state, created directly with its shardings."""
        init = jax.jit(
            lambda r: init_state(self.model, self.tx, r, self.image_shape),
            out_shardings=self.state_shardings,
        )
        return TargetedJit(init, self.target_device)(rng)


def build_programs(
    config: ml_collections.ConfigDict, devices, num_classes: int, steps_per_epoch: int
) -> Programs:
    """Builds (does not compile) the programs of `config` on a mesh of `devices`.

    `devices` may be real devices or a topology's (`jax.experimental.topologies`) for
    ahead-of-time compilation; the platform "auto" choices follow is `devices[0].platform`.
    """
    from afc_jax.train.loop import build_model  # loop imports this module

    devices = list(devices)
    target = devices[0]
    platform = normalize_platform(target.platform)
    model = build_model(config, num_classes)
    mesh = sharding.make_mesh(config, devices)
    tx, schedule = make_optimizer(config, steps_per_epoch)
    image_shape = (config.data.image_size, config.data.image_size, 3)
    with targeting(target):
        abstract = jax.eval_shape(
            lambda r: init_state(model, tx, r, image_shape), jax.random.PRNGKey(0)
        )
    state_sh = sharding.state_shardings(abstract, mesh, config.mesh.fsdp_min_size)
    data_sh = sharding.batch_sharding(mesh)
    batch_sh = {"image": data_sh, "label": data_sh, "mask": data_sh}
    replicated = sharding.replicated(mesh)
    train_step = jax.jit(
        make_train_step(model, tx, schedule, config, num_classes),
        in_shardings=(state_sh, batch_sh, replicated),
        out_shardings=(state_sh, replicated),
        donate_argnums=(0,),
    )
    eval_step = jax.jit(
        make_eval_step(model),
        in_shardings=(state_sh.params, batch_sh),
        out_shardings=replicated,
    )
    return Programs(
        model=model,
        mesh=mesh,
        platform=platform,
        target_device=target,
        tx=tx,
        schedule=schedule,
        image_shape=image_shape,
        abstract_state=abstract,
        state_shardings=state_sh,
        batch_shardings=batch_sh,
        train_step=TargetedJit(train_step, target),
        eval_step=TargetedJit(eval_step, target),
    )


def abstract_batch(programs: Programs, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    """ShapeDtypeStructs (with shardings) of a global batch, for `lower`."""
    sh = programs.batch_shardings
    return {
        "image": jax.ShapeDtypeStruct(
            (batch_size,) + programs.image_shape, jnp.float32, sharding=sh["image"]
        ),
        "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=sh["label"]),
        "mask": jax.ShapeDtypeStruct((batch_size,), jnp.bool_, sharding=sh["mask"]),
    }
