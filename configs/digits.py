"""The bundled demo: scikit-learn's handwritten digits, ideally upsampled to 32x32.

    python train.py --config configs/digits.py:model=convnext_afc --workdir runs/digits_afc
    python train.py --config configs/digits.py:model=convnext_baseline_circular \
        --workdir runs/digits_baseline

A nano network (depths 1,1,2,1; dims 16..64) trains in about a minute per model on 2 CPU cores.
No crops, flips or mixing: digits are small and not mirror-symmetric, and the point of the demo
is the shift behaviour of the trained models.
"""

from configs.base import base_config, parse_arg


def get_config(arg: str | None = None):
    args = parse_arg(arg, model="convnext_afc", image_size="32")
    c = base_config()
    c.model.name = args["model"]
    c.model.depths = (1, 1, 2, 1)
    c.model.dims = (16, 32, 48, 64)
    c.model.drop_path_rate = 0.0
    c.data.source = "digits"
    c.data.name = "afc_digits"
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.num_classes = 10
    c.data.image_size = int(args["image_size"])
    c.data.eval_crop_pct = 1.0  # no resize-and-crop: eval sees exactly what training sees
    c.data.mean = (0.3, 0.3, 0.3)
    c.data.std = (0.4, 0.4, 0.4)
    c.data.shuffle_buffer = 2048
    c.augment.random_resized_crop = False
    c.augment.hflip = False
    c.augment.randaugment = False
    c.augment.color_jitter = 0.0
    c.augment.random_erasing = 0.0
    c.augment.mixup = 0.0
    c.augment.cutmix = 0.0
    c.augment.mix_prob = 0.0
    c.augment.label_smoothing = 0.1
    c.batch_size = 64
    c.eval_batch_size = 120
    c.num_epochs = 15
    c.optim.base_lr = 2e-3
    c.optim.base_batch_size = 64
    c.optim.warmup_epochs = 1
    c.optim.min_lr = 1e-5
    c.optim.ema_decay = 0.99
    c.log_every_steps = 20
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 100
    c.checkpoint_keep = 2
    return c
