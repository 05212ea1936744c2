"""Synthetic token tasks: mqar, copy, selective_copy, induction.

Each wraps a generator from `attnlab.data` (deterministic in (seed, index)) in
the grain pipeline of `attnlab.data.pipeline`. Train and eval use disjoint
streams derived from `config.seed`. Shared `config.task` keys: `vocab_size`,
`seq_len`, `num_train_examples` (0 = a fresh example at every step; N = cycle a
fixed pool of N examples, reshuffled each epoch, as Zoology trains) and
`eval_batches` (0 = `config.train.eval_batches`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, ClassVar

import grain
import jax
import jax.numpy as jnp
import numpy as np

from attnlab.data import associative_recall, copying, induction_heads, pipeline
from attnlab.tasks.base import Batch, TokenTask
from attnlab.tasks.registry import register_task

SYNTHETIC_HELP = {
    "vocab_size": "number of token ids (model vocabulary)",
    "seq_len": "model input length T",
    "num_train_examples": "0 = fresh examples forever; N > 0 = fixed pool of N training examples",
}


class SyntheticTask(TokenTask):
  """A task whose examples come from `generator(seed, index, **generator_kwargs())`."""

  generator: ClassVar[Callable[..., Batch]]

  def generator_kwargs(self) -> dict[str, Any]:
    """Keyword arguments of the generator, taken from `config.task`."""
    return {"vocab_size": int(self.cfg.vocab_size), "seq_len": int(self.cfg.seq_len)}

  def check_args(self) -> None:
    """Raises a one-line ValueError for impossible generator arguments."""

  def validate(self) -> None:
    """Checks config keys, batch sizes and the generator arguments (no data is made)."""
    super().validate()
    if int(self.cfg.num_train_examples) < 0:
      raise ValueError(f"{self.name}: num_train_examples must be >= 0, got {self.cfg.num_train_examples}")
    if 0 < int(self.cfg.num_train_examples) < self.batch_size:
      raise ValueError(f"{self.name}: num_train_examples={self.cfg.num_train_examples} is smaller "
                       f"than batch_size={self.batch_size}")
    self.check_args()

  @property
  def vocab_size(self) -> int:
    """config.task.vocab_size."""
    return int(self.cfg.vocab_size)

  @property
  def seq_len(self) -> int:
    """config.task.seq_len."""
    return int(self.cfg.seq_len)

  def example_fn(self, split: str) -> Callable[[int], Batch]:
    """index -> example dict of the `split` ("train" / "eval") stream."""
    return functools.partial(type(self).generator, self.stream_seed(split), **self.generator_kwargs())

  def train_iterator(self, shard_index: int | None = None,
                     shard_count: int | None = None) -> grain.DatasetIterator:
    """Infinite checkpointable iterator of inputs/targets int32 [B_host, T], weights float32 [B_host, T]."""
    return pipeline.train_iterator(
        self.example_fn("train"), batch_size=self.batch_size, seed=self.stream_seed("shuffle"),
        num_examples=int(self.cfg.num_train_examples) or None,
        shard_index=shard_index, shard_count=shard_count)

  def eval_batches(self, shard_index: int | None = None,
                   shard_count: int | None = None) -> list[Batch]:
    """`num_eval_batches` fixed batches from the eval stream (disjoint seed from training)."""
    return pipeline.eval_batches(self.example_fn("eval"), batch_size=self.batch_size,
                                 num_batches=self.num_eval_batches,
                                 shard_index=shard_index, shard_count=shard_count)


@register_task("mqar")
class MQARTask(SyntheticTask):
  """Multi-query associative recall (Zoology: Arora et al., 2023); loss and accuracy on queries only.

  Zoology's setting uses vocab_size=8192 with (seq_len, num_kv_pairs) such as
  (64, 4), (128, 8), (256, 16) and more pairs at longer lengths; a quick CPU
  setting is vocab_size=256, seq_len=64, num_kv_pairs=8.
  """

  generator = staticmethod(associative_recall.mqar)
  DEFAULTS = {"vocab_size": 8192, "seq_len": 256, "num_kv_pairs": 16, "power_a": 0.01,
              "random_non_queries": True, "num_train_examples": 0, "head_at_queries": False}
  HELP = {**SYNTHETIC_HELP,
          "num_kv_pairs": "key-value pairs per example (all are queried); needs 4 * P <= seq_len",
          "power_a": "power-law exponent of query placement, p(gap) ~ a * gap^(a-1); Zoology: 0.01",
          "random_non_queries": "fill non-query slots with random tokens (Zoology default) "
                                "instead of token 0",
          "head_at_queries": "compute the vocabulary head only at the P query positions (the only "
                             "ones with a loss weight): same loss and accuracy, a fraction of the "
                             "head's cost at a large vocabulary"}

  def input_spec(self) -> dict[str, Any]:
    """As TokenTask's; with head_at_queries, inputs {tokens [B, T], head_positions int32 [B, P]}
    and targets / weights [B, P] (P = num_kv_pairs)."""
    spec = super().input_spec()
    if not bool(self.cfg.head_at_queries):
      return spec
    b, p = self.batch_size, int(self.cfg.num_kv_pairs)
    return {"inputs": {"tokens": spec["inputs"],
                       "head_positions": jax.ShapeDtypeStruct((b, p), jnp.int32)},
            "targets": jax.ShapeDtypeStruct((b, p), jnp.int32),
            "weights": jax.ShapeDtypeStruct((b, p), jnp.float32)}

  def example_fn(self, split: str) -> Callable[[int], Batch]:
    """As SyntheticTask's; with head_at_queries, each example keeps only its query positions."""
    make = super().example_fn(split)
    return functools.partial(_at_queries, make) if bool(self.cfg.head_at_queries) else make

  def generator_kwargs(self) -> dict[str, Any]:
    """vocab_size, seq_len, num_kv_pairs, power_a, random_non_queries."""
    return {**super().generator_kwargs(), "num_kv_pairs": int(self.cfg.num_kv_pairs),
            "power_a": float(self.cfg.power_a),
            "random_non_queries": bool(self.cfg.random_non_queries)}

  def check_args(self) -> None:
    """See `attnlab.data.associative_recall.check_mqar_args`."""
    kw = self.generator_kwargs()
    kw.pop("random_non_queries")
    associative_recall.check_mqar_args(**kw)


def _at_queries(make: Callable[[int], Batch], index: int) -> Batch:
  """make(index) with targets / weights kept at its weighted (query) positions only, in order,
  and those positions passed to the model as inputs["head_positions"]."""
  ex = make(index)
  pos = np.flatnonzero(ex["weights"]).astype(np.int32)
  return {"inputs": {"tokens": ex["inputs"], "head_positions": pos},
          "targets": ex["targets"][pos], "weights": ex["weights"][pos]}


@register_task("copy")
class CopyTask(SyntheticTask):
  """Copy n random tokens after a separator; loss on the copied tokens only."""

  generator = staticmethod(copying.copy)
  DEFAULTS = {"vocab_size": 16, "seq_len": 256, "num_tokens": 0, "num_train_examples": 0}
  HELP = {**SYNTHETIC_HELP,
          "num_tokens": "tokens to copy; 0 = seq_len // 2 (needs 2 * num_tokens <= seq_len)"}

  def generator_kwargs(self) -> dict[str, Any]:
    """vocab_size, seq_len, num_tokens (resolved from 0 to seq_len // 2)."""
    kw = super().generator_kwargs()
    return {**kw, "num_tokens": int(self.cfg.num_tokens) or kw["seq_len"] // 2}

  def check_args(self) -> None:
    """See `attnlab.data.copying.check_copy_args`."""
    copying.check_copy_args(**self.generator_kwargs(), task="copy")


@register_task("selective_copy")
class SelectiveCopyTask(SyntheticTask):
  """Selective copying (Gu & Dao, 2023, Mamba): reproduce tokens scattered among blanks, in order."""

  generator = staticmethod(copying.selective_copy)
  DEFAULTS = {"vocab_size": 16, "seq_len": 4112, "num_tokens": 16, "num_train_examples": 0}
  HELP = {**SYNTHETIC_HELP,
          "seq_len": "model input length T = context + num_tokens (Mamba: 4096 + 16)",
          "num_tokens": "data tokens scattered in the context and to reproduce (Mamba: 16)"}

  def generator_kwargs(self) -> dict[str, Any]:
    """vocab_size, seq_len, num_tokens."""
    return {**super().generator_kwargs(), "num_tokens": int(self.cfg.num_tokens)}

  def check_args(self) -> None:
    """See `attnlab.data.copying.check_copy_args`."""
    copying.check_copy_args(**self.generator_kwargs(), task="selective_copy")


@register_task("induction")
class InductionTask(SyntheticTask):
  """Induction heads: after the second trigger token predict the token that followed the first."""

  generator = staticmethod(induction_heads.induction)
  DEFAULTS = {"vocab_size": 16, "seq_len": 256, "num_train_examples": 0}
  HELP = dict(SYNTHETIC_HELP)

  def check_args(self) -> None:
    """See `attnlab.data.induction_heads.check_induction_args`."""
    induction_heads.check_induction_args(**self.generator_kwargs())
