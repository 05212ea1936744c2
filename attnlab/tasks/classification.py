"""Shared base of token sequence-classification tasks (`listops`, `text_classification`).

Batches: inputs int32 [B, T] (token 0 = padding), targets int32 [B] (class ids),
weights float32 [B] (1 for a real example, 0 for an eval padding row). The model is
`classifier` (`attnlab.models.classifier`), built with `model_kwargs()` =
{"vocab_size", "num_classes"}. Eval covers every example of the chosen split
(`config.task.split`) exactly once: ceil(N / B) batches, the last one filled with
copies of real examples whose weight is 0 (copies, not all-padding rows, so that no
variant sees a fully masked row). So `config.train.eval_batches` is unused and a non-zero
`config.task.eval_batches` is an error.
"""

from __future__ import annotations

import abc
import math
from typing import Any, Callable, ClassVar, Mapping

import grain
import jax
import jax.numpy as jnp
import numpy as np

from attnlab.data import pipeline
from attnlab.tasks import metrics as metrics_lib
from attnlab.tasks.base import Batch, Task

EVAL_SPLITS = ("val", "test")


def covering_example_fn(example_fn: Callable[[int], Batch], num_examples: int) -> Callable[[int], Batch]:
  """index -> example_fn(index) for index < num_examples, else a weight-0 copy of example index % N."""

  def fn(index: int) -> Batch:
    """Example `index`, or a padding copy beyond the last one."""
    if index < num_examples:
      return example_fn(index)
    ex = dict(example_fn(index % num_examples))
    ex["weights"] = np.zeros_like(ex["weights"])
    return ex

  return fn


def covering_eval_batches(example_fn: Callable[[int], Batch], *, num_examples: int, batch_size: int,
                          shard_index: int | None = None,
                          shard_count: int | None = None) -> list[Batch]:
  """ceil(num_examples / batch_size) batches holding examples 0..N-1 once, the rest weight 0."""
  if num_examples < 1:
    raise ValueError(f"the eval split has no examples (num_examples={num_examples})")
  return pipeline.eval_batches(covering_example_fn(example_fn, num_examples), batch_size=batch_size,
                               num_batches=math.ceil(num_examples / batch_size),
                               shard_index=shard_index, shard_count=shard_count)


class ClassificationTask(Task):
  """A task for the `classifier` model; subclasses give the data (see the abstract members)."""

  model: ClassVar[str] = "classifier"

  @property
  @abc.abstractmethod
  def seq_len(self) -> int:
    """Model input length T."""

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of token ids, padding 0 included."""

  @property
  @abc.abstractmethod
  def num_classes(self) -> int:
    """Number of classes C."""

  @abc.abstractmethod
  def example_fn(self, split: str) -> Callable[[int], Batch]:
    """index -> {"inputs" int32 [T], "targets" int32 [], "weights" float32 []} of `split`."""

  @abc.abstractmethod
  def num_examples(self, split: str) -> int:
    """Examples in `split` ("train" / "val" / "test"; 0 for train = unbounded)."""

  @property
  def eval_split(self) -> str:
    """config.task.split: "val" or "test"."""
    return str(self.cfg.split)

  def validate(self) -> None:
    """Checks the common keys, the eval split name and seq_len."""
    super().validate()
    if self.eval_split not in EVAL_SPLITS:
      raise ValueError(f"{self.name}: split must be one of {EVAL_SPLITS}, got {self.eval_split!r}")
    if int(self.cfg.seq_len) < 1:
      raise ValueError(f"{self.name}: seq_len must be >= 1, got {self.cfg.seq_len}")
    if int(self.cfg.eval_batches):
      raise ValueError(f"{self.name}: eval covers the whole {self.eval_split} split, so "
                       f"config.task.eval_batches must stay 0 (size the split instead)")

  def input_spec(self) -> dict[str, Any]:
    """inputs int32 [B, T], targets int32 [B], weights float32 [B] (B = config.train.batch_size)."""
    b = self.batch_size
    return {"inputs": jax.ShapeDtypeStruct((b, self.seq_len), jnp.int32),
            "targets": jax.ShapeDtypeStruct((b,), jnp.int32),
            "weights": jax.ShapeDtypeStruct((b,), jnp.float32)}

  def model_kwargs(self) -> dict[str, Any]:
    """{"vocab_size": V, "num_classes": C}."""
    return {"vocab_size": self.vocab_size, "num_classes": self.num_classes}

  def train_iterator(self, shard_index: int | None = None,
                     shard_count: int | None = None) -> grain.DatasetIterator:
    """Infinite checkpointable iterator of inputs int32 [B_host, T], targets int32 [B_host], weights [B_host].

    A finite train split is cycled, reshuffled every epoch with a seed from config.seed.
    """
    return pipeline.train_iterator(
        self.example_fn("train"), batch_size=self.batch_size, seed=self.stream_seed("shuffle"),
        num_examples=self.num_examples("train") or None,
        shard_index=shard_index, shard_count=shard_count)

  def eval_batches(self, shard_index: int | None = None,
                   shard_count: int | None = None) -> list[Batch]:
    """Every example of `config.task.split` once, in order; the last batch padded with weight-0 rows."""
    return covering_eval_batches(self.example_fn(self.eval_split),
                                 num_examples=self.num_examples(self.eval_split),
                                 batch_size=self.batch_size, shard_index=shard_index,
                                 shard_count=shard_count)

  def metrics(self, outputs: jnp.ndarray,
              batch: Mapping[str, jnp.ndarray]) -> dict[str, metrics_lib.Pair]:
    """`loss` (cross-entropy, nats) and `accuracy` pairs for logits [B, C] over weighted rows."""
    return metrics_lib.classification_metrics(outputs, batch)
