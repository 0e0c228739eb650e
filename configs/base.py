"""Defaults shared by every training config: the ConvNeXt/AFC ImageNet recipe.

Each config file (`configs/imagenet.py`, `configs/tfds_small.py`, `configs/digits.py`) starts
from `base_config()` and changes what differs. All fields are documented here once.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # ----------------------------------------------------------------- model
    c.model = ml_collections.ConfigDict()
    c.model.name = "convnext_afc_tiny"  # any afc_jax.models.available_models() name
    c.model.depths = ml_collections.FieldReference(None, field_type=tuple)  # bare families only
    c.model.dims = ml_collections.FieldReference(None, field_type=tuple)
    c.model.drop_path_rate = 0.1
    c.model.layer_scale_init = 1e-6
    c.model.head_init_scale = 1.0
    c.model.dtype = "float32"  # compute dtype: "float32" or "bfloat16" (params stay float32)
    c.model.filter_rule = "strict"
    # How AFC computes (not what): both choices give the same function to float32 round-off
    # and the same parameters. afc_formulation: "reference" (official: block MLPs with pointwise
    # layers at 2x, stem low-pass on the conv output), "fast" or "auto" (= "fast"; None is
    # "auto"); filter_impl: "fft", "matrix" or "auto" (per layer from size and target platform:
    # afc_jax.ops.filter_choice). Ignored by other families. mlp_impl: the deprecated name of
    # afc_formulation, still read (with a warning); giving both, they must agree.
    c.model.afc_formulation = ml_collections.FieldReference(None, field_type=str)
    c.model.mlp_impl = ml_collections.FieldReference(None, field_type=str)
    c.model.filter_impl = "auto"
    # Activation rematerialisation: "none", "block" or "stage" (recompute in the backward pass
    # what does not fit in memory; same function). benchmarks.tpu_compile says what fits.
    c.model.remat = "none"
    # AFC block MLPs: recompute each fine-grid map in the backward pass instead of storing it.
    # "auto": on a TPU except v5p (less HBM and fewer bytes there, for 5% more FLOPs), not
    # elsewhere;
    # "on" / "off" force it. Same values and gradients.
    c.model.fine_grid_remat = "auto"

    # ----------------------------------------------------------------- data
    c.data = ml_collections.ConfigDict()
    c.data.source = "tfds"  # "tfds" | "image_folder" | "digits" (bundled demo)
    c.data.name = "imagenet2012"  # TFDS name when source == "tfds"
    c.data.data_dir = ml_collections.FieldReference(None, field_type=str)  # else $TFDS_DATA_DIR
    c.data.manual_dir = ml_collections.FieldReference(None, field_type=str)  # imagenet2012 tars
    c.data.folder = ml_collections.FieldReference(None, field_type=str)  # image_folder root
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.num_classes = 1000
    c.data.image_size = 224
    c.data.eval_crop_pct = 0.875  # resize the short side to image_size / eval_crop_pct
    c.data.mean = (0.485, 0.456, 0.406)
    c.data.std = (0.229, 0.224, 0.225)
    c.data.shuffle_buffer = 16_384
    c.data.cache = False
    c.data.prefetch = 2

    # ----------------------------------------------------------------- augmentation
    c.augment = ml_collections.ConfigDict()
    c.augment.random_resized_crop = True
    c.augment.crop_scale = (0.08, 1.0)
    c.augment.crop_ratio = (3 / 4, 4 / 3)
    c.augment.hflip = True
    # timm's rand-m9-mstd0.5-inc1, in TensorFlow ops (README "Deviations from the official
    # recipe"); each of the randaugment_layers ops is applied with probability 0.5
    c.augment.randaugment = True
    c.augment.randaugment_layers = 2
    c.augment.randaugment_magnitude = 9.0
    c.augment.randaugment_magnitude_std = 0.5
    c.augment.color_jitter = 0.4  # only used when randaugment is off
    c.augment.random_erasing = 0.25  # probability; one box, per-pixel N(0, 1) ("pixel" mode)
    c.augment.mixup = 0.8
    c.augment.cutmix = 1.0
    c.augment.mix_prob = 1.0
    # per batch: cutmix with this probability, else mixup; drawn per device shard (README
    # "Deviations from the official recipe")
    c.augment.switch_prob = 0.5
    c.augment.label_smoothing = 0.1

    # ----------------------------------------------------------------- optimisation
    c.batch_size = 4096  # global, over all hosts and devices
    c.eval_batch_size = 1024
    c.num_epochs = 300
    c.optim = ml_collections.ConfigDict()
    # at base_batch_size; scaled linearly with batch_size x grad_accum_steps (the official
    # script uses it as given: the same at 4096; README "Deviations from the official recipe")
    c.optim.base_lr = 4e-3
    c.optim.base_batch_size = 4096
    c.optim.warmup_epochs = 20
    c.optim.min_lr = 1e-6
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    # on every parameter with more than one dimension that is not a bias (conv and linear
    # weights, polynomial coefficients), as the official optimizer: optimizer.weight_decay_mask
    c.optim.weight_decay = 0.05
    c.optim.grad_clip_norm = ml_collections.FieldReference(None, field_type=float)
    c.optim.grad_accum_steps = 1
    c.optim.ema_decay = 0.9999

    # ----------------------------------------------------------------- mesh / sharding
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # devices on the data axis (-1: all that the fsdp axis leaves)
    c.mesh.fsdp = 1  # devices over which large params and optimizer state are sharded
    c.mesh.fsdp_min_size = 2**18  # params with fewer elements stay replicated
    # TPU slices of a multi-slice run (DCN between them): the data axis is split over them and
    # FSDP stays within a slice. Without slice_index (GPU/CPU) each process is one slice.
    c.mesh.slices = 1

    # ----------------------------------------------------------------- bookkeeping
    c.log_every_steps = 100
    c.eval_every_steps = 0  # 0: once per epoch
    c.checkpoint_every_steps = 1000
    c.checkpoint_keep = 3
    c.checkpoint_async = True

    # ----------------------------------------------------------------- reliability
    c.nonfinite = "stop"  # NaN/Inf loss or gradient: "stop" (exit 3) or "skip" (drop, count)
    c.watchdog_timeout_s = 1800  # exit (code 4) after this long without a step; 0 disables
    return c


def parse_arg(arg: str | None, **defaults) -> dict:
    """Parses a config-file argument like "model=convnext_afc_tiny,dataset=cifar10".

    Keys must be among `defaults`; unknown keys are errors that list the allowed ones.
    """
    values = dict(defaults)
    for part in filter(None, (arg or "").split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"config argument {part!r} is not key=value")
        if key not in values:
            raise ValueError(f"unknown config argument {key!r}; allowed: {sorted(values)}")
        values[key] = value
    return values
