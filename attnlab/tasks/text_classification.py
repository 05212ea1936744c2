"""Text classification from `label,text` CSV files with UTF-8 byte tokens (`text_classification`).

Data: `attnlab.data.text_classification` (file format, label ids and errors are
documented there). val is `val_path` or, without it, a seeded `val_fraction` of the
train file (seed `config.task.data_seed`); test is `test_path`. Inputs are the first
`seq_len` bytes + 1 (0 = padding; vocab 257). The files are read on first use.
"""

from __future__ import annotations

import functools
from typing import Callable

from attnlab.data import text_classification as tc
from attnlab.tasks.base import Batch
from attnlab.tasks.classification import ClassificationTask
from attnlab.tasks.registry import register_task


@register_task("text_classification")
class TextClassificationTask(ClassificationTask):
  """Classify each CSV row's text into its label with the `classifier` model."""

  DEFAULTS = {"train_path": "", "val_path": "", "test_path": "", "val_fraction": 0.1,
              "header": True, "label_column": "label", "text_column": "text", "seq_len": 1024,
              "split": "val", "data_seed": 0}
  HELP = {
      "train_path": "training CSV (label,text; see attnlab.data.text_classification)",
      "val_path": "optional val CSV; empty = hold out val_fraction of train_path",
      "test_path": 'optional test CSV (needed for split="test")',
      "val_fraction": "held-out fraction of train_path when val_path is empty, in (0, 1)",
      "header": "True: the first row names the columns; False: rows are exactly label,text",
      "label_column": "label column name (header=True)",
      "text_column": "text column name (header=True)",
      "seq_len": "model input length T in bytes (longer texts are truncated)",
      "split": 'eval split: "val" or "test"',
      "data_seed": "seed of the val_fraction hold-out",
  }

  def __init__(self, config):
    """Stores the config; the CSV files are read on first use."""
    super().__init__(config)
    self._data: tuple[dict[str, tc.ClassificationSplit], tuple[str, ...]] | None = None

  def _load(self) -> tuple[dict[str, tc.ClassificationSplit], tuple[str, ...]]:
    """(splits, label names), read once."""
    if self._data is None:
      c = self.cfg
      self._data = tc.load_splits(
          train_path=str(c.train_path), val_path=str(c.val_path), test_path=str(c.test_path),
          val_fraction=float(c.val_fraction), seed=int(c.data_seed), header=bool(c.header),
          label_column=str(c.label_column), text_column=str(c.text_column))
    return self._data

  def validate(self) -> None:
    """Checks keys, reads the files (one-line errors), and the split sizes against the batch size."""
    super().validate()
    if self.eval_split == "test" and not self.cfg.test_path:
      raise ValueError('text_classification: split="test" needs config.task.test_path')
    splits, _ = self._load()
    if len(splits["train"]) < self.batch_size:
      raise ValueError(f"text_classification: the train split has {len(splits['train'])} rows, "
                       f"fewer than batch_size={self.batch_size}")

  @property
  def label_names(self) -> tuple[str, ...]:
    """Class names; class id i is label_names[i]."""
    return self._load()[1]

  @property
  def seq_len(self) -> int:
    """config.task.seq_len."""
    return int(self.cfg.seq_len)

  @property
  def vocab_size(self) -> int:
    """257: padding and the 256 byte values."""
    return tc.VOCAB_SIZE

  @property
  def num_classes(self) -> int:
    """Distinct labels of the training rows (reads the files)."""
    return len(self.label_names)

  def num_examples(self, split: str) -> int:
    """Rows in `split`."""
    splits, _ = self._load()
    if split not in splits:
      raise ValueError(f"text_classification: no {split!r} split; set config.task.{split}_path")
    return len(splits[split])

  def example_fn(self, split: str) -> Callable[[int], Batch]:
    """index -> row `index` of `split` as byte tokens (ClassificationSplit.example)."""
    self.num_examples(split)
    return functools.partial(_example, self._load()[0][split], seq_len=self.seq_len)


def _example(split: tc.ClassificationSplit, index: int, *, seq_len: int) -> Batch:
  """`split.example(index, seq_len)` (a module-level function, so it pickles)."""
  return split.example(index, seq_len)
