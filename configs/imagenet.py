"""ImageNet-1k with the paper's recipe (ConvNeXt/AFC, 300 epochs).

    python train.py --config configs/imagenet.py:model=convnext_afc_tiny --workdir gs://.../afc_t

Every field with an official counterpart is the official training script's effective value
(tests/configs/test_imagenet_recipe.py checks them against official_recipe.json); the few
deliberate differences, all outside these values, are README "Deviations from the official
recipe".

`model` is any sized registry name: convnext_afc_{tiny,small,base,large,xlarge},
convnext_baseline_circular_*, convnext_aps_*, convnext_*. Drop path follows the ConvNeXt
paper per size (0.1 T, 0.4 S, 0.5 B/L/XL); large and xlarge shard parameters and optimizer
state over an FSDP axis of 8 devices (override with --config.mesh.fsdp=...).
"""

from configs.base import base_config, parse_arg

DROP_PATH = {"tiny": 0.1, "small": 0.4, "base": 0.5, "large": 0.5, "xlarge": 0.5}


def get_config(arg: str | None = None):
    args = parse_arg(arg, model="convnext_afc_tiny")
    c = base_config()
    c.model.name = args["model"]
    size = c.model.name.rpartition("_")[2]
    if size not in DROP_PATH:
        raise ValueError(
            f"imagenet config needs a sized model name (..._tiny etc.), got {args['model']!r}"
        )
    c.model.drop_path_rate = DROP_PATH[size]
    if size in ("large", "xlarge"):
        c.mesh.fsdp = 8
    c.data.source = "tfds"
    c.data.name = "imagenet2012"
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.num_classes = 1000
    c.data.image_size = 224
    c.eval_every_steps = 0  # once per epoch
    c.log_every_steps = 100
    c.checkpoint_every_steps = 1000
    return c
