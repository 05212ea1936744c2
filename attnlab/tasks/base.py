"""The Task interface: a task's data, vocabulary, sequence length, loss and metrics.

A Task is built from the full ml_collections config and reads `config.task.*`
(its keys and defaults are the class's `DEFAULTS`, documented in `HELP`),
`config.train.batch_size` (global batch), `config.train.eval_batches` and
`config.seed`. Every task here is token-in / token-out: the model maps inputs
int32 [B, T] to logits [B, T, vocab_size] and the loss is a weighted next-token
cross-entropy over the positions where `weights` is 1.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Mapping

import grain
import jax.numpy as jnp
import ml_collections
import numpy as np

from attnlab.data.seeding import derive_seed
from attnlab.tasks import metrics as metrics_lib

Batch = dict[str, np.ndarray]

DEFAULT_EVAL_BATCHES = 10  # used when neither config.task nor config.train sets eval_batches

COMMON_DEFAULTS: dict[str, Any] = {"eval_batches": 0}
COMMON_HELP: dict[str, str] = {
    "eval_batches": "number of eval batches; 0 = use config.train.eval_batches",
}


class Task(abc.ABC):
  """Abstract task. Subclasses set DEFAULTS / HELP and implement the abstract members."""

  name: ClassVar[str] = ""
  DEFAULTS: ClassVar[dict[str, Any]] = {}
  HELP: ClassVar[dict[str, str]] = {}

  def __init__(self, config: ml_collections.ConfigDict):
    """Stores the config; cheap (no files read, nothing checked: see `validate`)."""
    self.config = config
    task_cfg = config.task
    self.cfg = ml_collections.ConfigDict(
        {k: task_cfg.get(k, v) for k, v in self.all_defaults().items()})
    self._unknown_keys = sorted(set(task_cfg.keys()) - set(self.all_defaults()) - {"name"})
    self.seed = int(config.get("seed", 0))
    self.batch_size = int(config.train.batch_size)
    train_eval = config.train.get("eval_batches", DEFAULT_EVAL_BATCHES)
    self.num_eval_batches = int(self.cfg.eval_batches or train_eval)

  # ---- configuration -------------------------------------------------------

  @classmethod
  def all_defaults(cls) -> dict[str, Any]:
    """The task's `config.task` keys and defaults (common keys included, no `name`)."""
    return {**COMMON_DEFAULTS, **cls.DEFAULTS}

  @classmethod
  def config_help(cls) -> dict[str, str]:
    """One line of documentation per `config.task` key."""
    return {**COMMON_HELP, **cls.HELP}

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    """`config.task` defaults for this task, including `name` (see `config_help`)."""
    return ml_collections.ConfigDict({"name": cls.name, **cls.all_defaults()})

  def stream_seed(self, split: str) -> int:
    """Seed of the `split` ("train" / "eval") data stream, derived from config.seed and the task name."""
    return derive_seed(self.seed, f"{self.name}/{split}")

  def validate(self) -> None:
    """Raises a one-line ValueError / FileNotFoundError for bad input, before compiling.

    The base checks unknown `config.task` keys and batch sizes; subclasses extend
    it (and must call `super().validate()`).
    """
    if self._unknown_keys:
      raise ValueError(
          f"{self.name}: unknown config.task keys {self._unknown_keys}; "
          f"known: {sorted(self.all_defaults())}")
    if self.batch_size < 1:
      raise ValueError(f"{self.name}: config.train.batch_size must be >= 1, got {self.batch_size}")
    if self.num_eval_batches < 1:
      raise ValueError(f"{self.name}: eval_batches must be >= 1, got {self.num_eval_batches}")

  # ---- data ----------------------------------------------------------------

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of token ids (the model's input and output vocabulary)."""

  @property
  @abc.abstractmethod
  def seq_len(self) -> int:
    """Model input length T of every example."""

  @abc.abstractmethod
  def train_iterator(self, shard_index: int | None = None,
                     shard_count: int | None = None) -> grain.DatasetIterator:
    """Infinite, checkpointable iterator of this host's training batches.

    Yields dicts with inputs / targets int32 [B_host, T] and weights float32
    [B_host, T], B_host = batch_size // shard_count (shards default to the jax
    processes). Save / restore it with `get_state()` / `set_state()` or with
    orbax via `attnlab.data.checkpointing`.
    """

  @abc.abstractmethod
  def eval_batches(self, shard_index: int | None = None,
                   shard_count: int | None = None) -> list[Batch]:
    """Deterministic list of this host's eval batches (same dict layout as training)."""

  # ---- loss and metrics (jnp, jit-able) -------------------------------------

  def metrics(self, logits: jnp.ndarray, batch: Mapping[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
    """Scalar metrics for logits [B, T, V] and a batch: weighted `loss` (nats) and `accuracy`."""
    return metrics_lib.token_metrics(logits, batch)

  def loss_fn(self, logits: jnp.ndarray,
              batch: Mapping[str, jnp.ndarray]) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Returns (loss, metrics) with loss = metrics["loss"] (for jax.value_and_grad(has_aux=True))."""
    m = self.metrics(logits, batch)
    return m["loss"], m
