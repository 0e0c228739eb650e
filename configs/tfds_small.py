"""Small-image TFDS datasets (cifar10, cifar100, ...) at native resolution.

    python train.py --config configs/tfds_small.py:dataset=cifar10,model=convnext_afc \
        --workdir runs/cifar10_afc

Bare family names get a small network (depths 2,2,6,2; dims 64..512); sized names are used as
they are. Images are upsampled to 32 by default (a multiple of 32 is required).
"""

from configs.base import base_config, parse_arg


def get_config(arg: str | None = None):
    args = parse_arg(
        arg, model="convnext_afc", dataset="cifar10", image_size="32", num_classes="10"
    )
    c = base_config()
    c.model.name = args["model"]
    if "_" not in c.model.name.removeprefix("convnext").strip("_") or c.model.name in (
        "convnext",
        "convnext_afc",
        "convnext_aps",
        "convnext_baseline_circular",
    ):
        c.model.depths = (2, 2, 6, 2)
        c.model.dims = (64, 128, 256, 512)
    c.model.drop_path_rate = 0.1
    c.data.source = "tfds"
    c.data.name = args["dataset"]
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.num_classes = int(args["num_classes"])
    c.data.image_size = int(args["image_size"])
    c.data.eval_crop_pct = 1.0
    c.data.mean = (0.4914, 0.4822, 0.4465)
    c.data.std = (0.247, 0.243, 0.261)
    c.augment.random_resized_crop = False
    c.augment.random_erasing = 0.0
    c.batch_size = 256
    c.eval_batch_size = 500
    c.num_epochs = 100
    c.optim.base_lr = 2e-3
    c.optim.base_batch_size = 256
    c.optim.warmup_epochs = 5
    c.optim.ema_decay = 0.999
    c.log_every_steps = 50
    c.checkpoint_every_steps = 500
    return c
