"""Input pipelines: TFDS / image-folder / bundled digits datasets, augmentation, mixup/cutmix.

```python
from afc_jax import data
info = data.dataset_info(config)
train_iter = data.create_train_iterator(config, process_index=jax.process_index(),
                                        process_count=jax.process_count(), start_step=step)
eval_batches = data.create_eval_iterator(config, process_index=..., process_count=...)
images, soft_labels = data.mix_batch(rng, images, labels, num_classes=..., ...)  # in jit
```
"""

from afc_jax.data.mixing import mix_batch, smooth_one_hot
from afc_jax.data.pipeline import (
    DataError,
    DatasetInfo,
    DatasetNotFoundError,
    EvalBatches,
    create_eval_iterator,
    create_train_dataset,
    create_train_iterator,
    dataset_info,
    eval_steps,
    local_eval_count,
    steps_per_epoch,
)

__all__ = [
    "DataError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "EvalBatches",
    "create_eval_iterator",
    "create_train_dataset",
    "create_train_iterator",
    "dataset_info",
    "eval_steps",
    "local_eval_count",
    "mix_batch",
    "smooth_one_hot",
    "steps_per_epoch",
]
