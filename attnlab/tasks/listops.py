"""LRA ListOps (Tay et al., 2021; Nangia & Bowman, 2018): the value 0..9 of a nested expression.

Data: `attnlab.data.listops` (LRA's generator rules, no download). The dataset is
fixed by `config.task.data_seed` (not `config.seed`, so seed sweeps share one
dataset): train, val and test are disjoint seeded streams of `num_train_examples`,
`num_val_examples` and `num_test_examples` expressions (LRA: 96,000 / 2,000 / 2,000).
Eval (`config.task.split` = "val" or "test") covers the whole split.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from attnlab.data import listops as listops_data
from attnlab.tasks.base import Batch
from attnlab.tasks.classification import ClassificationTask
from attnlab.tasks.registry import register_task


@register_task("listops")
class ListOpsTask(ClassificationTask):
  """10-way classification of ListOps expressions with the `classifier` model."""

  DEFAULTS = {"seq_len": 2000, "max_depth": 10, "max_args": 10, "min_length": 500,
              "max_length": 2000, "num_train_examples": 96_000, "num_val_examples": 2000,
              "num_test_examples": 2000, "split": "val", "data_seed": 0}
  HELP = {
      "seq_len": "model input length T; needs seq_len >= max_length - 1 (no expression is cut)",
      "max_depth": "deepest node, root = 1, digits included (LRA: 10)",
      "max_args": "most arguments of one operator, at least 2 (LRA: 10)",
      "min_length": "expressions have more than min_length tokens (LRA: 500)",
      "max_length": "expressions have fewer than max_length tokens (LRA: 2000)",
      "num_train_examples": "training pool, cycled and reshuffled per epoch; 0 = a fresh "
                            "expression at every step (LRA: 96000)",
      "num_val_examples": "size of the val split (LRA: 2000)",
      "num_test_examples": "size of the test split (LRA: 2000)",
      "split": 'eval split: "val" (during training) or "test" (the reported number)',
      "data_seed": "seed of the dataset (all three splits); config.seed only shuffles and inits",
  }

  def generator_kwargs(self) -> dict[str, Any]:
    """seq_len, max_depth, max_args, min_length, max_length from config.task."""
    return {k: int(self.cfg[k]) for k in ("seq_len", "max_depth", "max_args", "min_length",
                                          "max_length")}

  def validate(self) -> None:
    """Checks the generator arguments, the split sizes and that seq_len holds every expression."""
    super().validate()
    kw = self.generator_kwargs()
    seq_len = kw.pop("seq_len")
    listops_data.ListOpsSpec(**kw).check()
    if seq_len < kw["max_length"] - 1:
      raise ValueError(f"listops: seq_len={seq_len} would cut expressions of up to "
                       f"{kw['max_length'] - 1} tokens; set seq_len >= max_length - 1")
    for split in listops_data.SPLITS:
      n = int(self.cfg[f"num_{split}_examples"])
      if n < (0 if split == "train" else 1):
        raise ValueError(f"listops: num_{split}_examples must be >= {0 if split == 'train' else 1}, got {n}")
    n_train = int(self.cfg.num_train_examples)
    if 0 < n_train < self.batch_size:
      raise ValueError(f"listops: num_train_examples={n_train} is smaller than batch_size={self.batch_size}")
    if int(self.cfg.data_seed) < 0:
      raise ValueError(f"listops: data_seed must be >= 0, got {self.cfg.data_seed}")

  @property
  def seq_len(self) -> int:
    """config.task.seq_len."""
    return int(self.cfg.seq_len)

  @property
  def vocab_size(self) -> int:
    """16: padding, 10 digits, 4 operators, "]"."""
    return listops_data.VOCAB_SIZE

  @property
  def num_classes(self) -> int:
    """10 (the digits)."""
    return listops_data.NUM_CLASSES

  def num_examples(self, split: str) -> int:
    """config.task.num_<split>_examples (train: 0 = unbounded)."""
    return int(self.cfg[f"num_{split}_examples"])

  def example_fn(self, split: str) -> Callable[[int], Batch]:
    """index -> `attnlab.data.listops.listops(data_seed, index, split=split, ...)`."""
    return functools.partial(listops_data.listops, int(self.cfg.data_seed), split=split,
                             **self.generator_kwargs())
