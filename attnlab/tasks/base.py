"""The Task interface: a task owns its inputs, its model choice, its loss and its metrics.

A Task is built from the full ml_collections config and reads `config.task.*`
(its keys and defaults are the class's `DEFAULTS`, documented in `HELP`),
`config.train.batch_size` (global batch), `config.train.eval_batches` and
`config.seed`. It declares:

- `model`: the key of the model it needs in `attnlab.models.MODELS` ("lm",
  "classifier", "forecaster", ...) and `model_kwargs()`, the facts that model needs
  (vocabulary size, number of classes, horizon...);
- `input_spec()`: the shapes and dtypes of one global batch (the trainer initialises
  the model from `input_spec()["inputs"]`, as big_vision does from `element_spec`);
- `metrics(outputs, batch)`: `{name: (sum, count)}` pairs, "loss" among them; the
  trainer minimises sum / count of "loss" and evaluates exactly over all batches;
- `example_count(batch)`: how many examples of a batch count (padding rows do not).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Mapping

import grain
import jax
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
  model: ClassVar[str] = "lm"
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
    if self.seed < 0:  # numpy's SeedSequence, which derives the data streams, takes none
      raise ValueError(f"config.seed must be >= 0, got {self.seed}")
    if self.batch_size < 1:
      raise ValueError(f"{self.name}: config.train.batch_size must be >= 1, got {self.batch_size}")
    if self.num_eval_batches < 1:
      raise ValueError(f"{self.name}: eval_batches must be >= 1, got {self.num_eval_batches}")

  # ---- inputs and model ------------------------------------------------------

  @abc.abstractmethod
  def input_spec(self) -> dict[str, Any]:
    """Shapes and dtypes of one global batch: {"inputs": ShapeDtypeStruct (or a pytree of
    them), "targets": ..., "weights": ...}, leading axis config.train.batch_size."""

  @abc.abstractmethod
  def model_kwargs(self) -> dict[str, Any]:
    """Keyword arguments the task's model builder needs (e.g. {"vocab_size": V})."""

  @abc.abstractmethod
  def train_iterator(self, shard_index: int | None = None,
                     shard_count: int | None = None) -> grain.DatasetIterator:
    """Infinite, checkpointable iterator of this host's training batches.

    Yields dicts laid out as `input_spec()` with leading axis B_host = batch_size //
    shard_count (shards default to the jax processes). Save / restore it with
    `get_state()` / `set_state()` or with orbax (`attnlab.train.checkpoint` saves it with grain's handler).
    """

  @abc.abstractmethod
  def eval_batches(self, shard_index: int | None = None,
                   shard_count: int | None = None) -> list[Batch]:
    """Deterministic list of this host's eval batches (same layout as training).

    Together they hold every eval example once; padding rows have weight 0.
    """

  # ---- loss and metrics (jnp, jit-able) -------------------------------------

  @abc.abstractmethod
  def metrics(self, outputs: jnp.ndarray,
              batch: Mapping[str, jnp.ndarray]) -> dict[str, metrics_lib.Pair]:
    """{name: (sum, count)} float32 pairs for the model's `outputs` on `batch`; "loss" is required."""

  def example_count(self, batch: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
    """Examples in `batch` that count: rows whose weights sum to more than 0."""
    w = batch["weights"]
    return jnp.sum((jnp.sum(w.reshape(w.shape[0], -1), axis=1) > 0).astype(jnp.float32))

  def loss_fn(self, outputs: jnp.ndarray,
              batch: Mapping[str, jnp.ndarray]) -> tuple[jnp.ndarray, dict[str, metrics_lib.Pair]]:
    """Returns (loss = sum / count of metrics["loss"], metrics) for jax.value_and_grad(has_aux=True)."""
    m = self.metrics(outputs, batch)
    return metrics_lib.ratio(m["loss"]), m


class TokenTask(Task):
  """A token-in task for the `lm` model: inputs / targets int [B, T], weights float [B, T].

  Subclasses provide `vocab_size` and `seq_len`.
  """

  model: ClassVar[str] = "lm"

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of token ids (the model's input and output vocabulary)."""

  @property
  @abc.abstractmethod
  def seq_len(self) -> int:
    """Model input length T of every example."""

  def input_spec(self) -> dict[str, Any]:
    """inputs / targets int32 [B, T], weights float32 [B, T]."""
    b, t = self.batch_size, self.seq_len
    return {"inputs": jax.ShapeDtypeStruct((b, t), jnp.int32),
            "targets": jax.ShapeDtypeStruct((b, t), jnp.int32),
            "weights": jax.ShapeDtypeStruct((b, t), jnp.float32)}

  def model_kwargs(self) -> dict[str, Any]:
    """{"vocab_size": V}."""
    return {"vocab_size": self.vocab_size}

  def metrics(self, outputs: jnp.ndarray,
              batch: Mapping[str, jnp.ndarray]) -> dict[str, metrics_lib.Pair]:
    """Weighted next-token cross-entropy `loss` and `accuracy` for logits [B, T, V]."""
    return metrics_lib.token_metrics(outputs, batch)
