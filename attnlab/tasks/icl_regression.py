"""`icl_regression`: in-context linear regression (Garg et al., 2022; He et al., 2025).

Prompts (`attnlab.data.icl_regression`): a fresh w ~ N(0, I_d) per prompt, n pairs
(x_i, w . x_i) with x_i ~ N(0, I_d) as (x_i, y_i) tokens, the query (x_q, 0) last; the
model (`icl_regressor`) predicts y_q at the query token. Training draws n uniformly from
min_train_examples..train_examples (default 1..N: every prompt length up to N, as Garg
et al. train on every prefix); every prompt has slots = eval_multiplier * N context
positions, the unused ones padding, so evaluation runs the same shapes up to
eval_multiplier x the training length.

Eval: `eval_batches` batches of every length n in `eval_lengths()` (1, 1 + step, ...,
plus N and slots), one length per batch, the same number of prompts at every length.
Metrics (exact (sum, count) pairs): `loss` = `mse` (squared error of y_q), `nmse` = mse / d
(Garg et al.'s normalisation: predicting 0 scores 1, least squares ~0 once n >= d on
noise-free prompts), `nmse_n<n>` per length (the error against the number of in-context
examples), `nmse_in` (lengths <= N), `nmse_long` (lengths > N), `nmse_train_len` (n = N),
`nmse_max_len` (n = slots) and `length_growth` = nmse_max_len - nmse_train_len (> 0: the
error rises on prompts longer than any seen in training), with `length_gain` its negative.
The last two are exact because every length has the same number of eval prompts.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, ClassVar, Mapping

import grain
import jax
import jax.numpy as jnp
import numpy as np

from attnlab.data import icl_regression as icl
from attnlab.data import pipeline
from attnlab.tasks import metrics as metrics_lib
from attnlab.tasks.base import Batch, Task
from attnlab.tasks.registry import register_task


@register_task("icl_regression")
class ICLRegressionTask(Task):
  """Predict y_q = w . x_q from n in-context pairs (x_i, w . x_i) with a fresh w per prompt."""

  model: ClassVar[str] = "icl_regressor"
  DEFAULTS = {"dim": 5, "train_examples": 20, "min_train_examples": 1, "eval_multiplier": 2,
              "eval_step": 1, "noise": 0.0, "num_train_examples": 0}
  HELP = {
      "dim": "input dimension d (x, w in R^d); tokens have d + 1 features",
      "train_examples": "N: the most in-context pairs of a training prompt",
      "min_train_examples": "the fewest in-context pairs of a training prompt (= N: fixed length)",
      "eval_multiplier": "prompts are evaluated up to eval_multiplier * N pairs (the padded length)",
      "eval_step": "evaluated lengths 1, 1 + step, ... (plus N and the longest)",
      "noise": "std of Gaussian noise added to every y (0 = noise-free)",
      "num_train_examples": "0 = a fresh prompt every step; M > 0 = cycle a fixed pool of M prompts",
  }

  # ---- configuration ---------------------------------------------------------------

  @property
  def dim(self) -> int:
    """config.task.dim (d)."""
    return int(self.cfg.dim)

  @property
  def slots(self) -> int:
    """Context positions of every prompt: eval_multiplier * train_examples."""
    return int(self.cfg.eval_multiplier) * int(self.cfg.train_examples)

  def eval_lengths(self) -> list[int]:
    """The evaluated numbers of in-context examples: 1, 1 + eval_step, ..., N and slots (sorted)."""
    n = int(self.cfg.train_examples)
    return sorted(set(range(1, self.slots + 1, max(int(self.cfg.eval_step), 1))) | {n, self.slots})

  def _prompt_kwargs(self, lo: int, hi: int) -> dict[str, Any]:
    """Generator keywords for prompts with lo..hi pairs."""
    return {"dim": self.dim, "slots": self.slots, "min_examples": lo, "max_examples": hi,
            "noise": float(self.cfg.noise)}

  def validate(self) -> None:
    """Checks keys, batch sizes and the prompt arguments (one-line ValueErrors; nothing is made)."""
    super().validate()
    if int(self.cfg.train_examples) < 1:
      raise ValueError(f"icl_regression: train_examples must be >= 1, got {self.cfg.train_examples}")
    if int(self.cfg.eval_multiplier) < 1:
      raise ValueError(f"icl_regression: eval_multiplier must be an integer >= 1, got "
                       f"{self.cfg.eval_multiplier}")
    if int(self.cfg.eval_step) < 1:
      raise ValueError(f"icl_regression: eval_step must be >= 1, got {self.cfg.eval_step}")
    if int(self.cfg.num_train_examples) < 0 or 0 < int(self.cfg.num_train_examples) < self.batch_size:
      raise ValueError(f"icl_regression: num_train_examples must be 0 or >= batch_size="
                       f"{self.batch_size}, got {self.cfg.num_train_examples}")
    icl.check_prompt_args(**self._prompt_kwargs(int(self.cfg.min_train_examples),
                                                int(self.cfg.train_examples)))

  # ---- inputs and model --------------------------------------------------------------

  def input_spec(self) -> dict[str, Any]:
    """inputs {tokens float32 [B, S + 1, d + 1], valid bool [B, S + 1]}, targets / weights
    float32 [B], num_examples int32 [B] (S = slots)."""
    b, t = self.batch_size, self.slots + 1
    return {"inputs": {"tokens": jax.ShapeDtypeStruct((b, t, self.dim + 1), jnp.float32),
                       "valid": jax.ShapeDtypeStruct((b, t), jnp.bool_)},
            "targets": jax.ShapeDtypeStruct((b,), jnp.float32),
            "weights": jax.ShapeDtypeStruct((b,), jnp.float32),
            "num_examples": jax.ShapeDtypeStruct((b,), jnp.int32)}

  def model_kwargs(self) -> dict[str, Any]:
    """{} (the regressor reads its sizes from the inputs)."""
    return {}

  # ---- batches -------------------------------------------------------------------------

  def example_fn(self, stream: str, lo: int, hi: int) -> Callable[[int], Batch]:
    """index -> one prompt of `stream` with lo..hi in-context pairs."""
    return functools.partial(icl.prompt, self.stream_seed(stream), **self._prompt_kwargs(lo, hi))

  def train_iterator(self, shard_index: int | None = None,
                     shard_count: int | None = None) -> grain.DatasetIterator:
    """Endless checkpointable stream of training prompts (min_train_examples..N pairs each)."""
    fn = self.example_fn("train", int(self.cfg.min_train_examples), int(self.cfg.train_examples))
    return pipeline.train_iterator(fn, batch_size=self.batch_size, seed=self.stream_seed("shuffle"),
                                   num_examples=int(self.cfg.num_train_examples) or None,
                                   shard_index=shard_index, shard_count=shard_count)

  def eval_batches(self, shard_index: int | None = None,
                   shard_count: int | None = None) -> list[Batch]:
    """`num_eval_batches` batches at every length of `eval_lengths()` (one length per batch,
    a stream of its own per length, disjoint from training)."""
    out = []
    for n in self.eval_lengths():
      fn = self.example_fn(f"eval/n={n}", n, n)
      flat = lambda i, fn=fn: _flatten(fn(i))  # pipeline.eval_batches stacks flat dicts
      out += [_nest(b) for b in pipeline.eval_batches(
          flat, batch_size=self.batch_size, num_batches=self.num_eval_batches,
          shard_index=shard_index, shard_count=shard_count)]
    return out

  # ---- metrics ---------------------------------------------------------------------------

  def metrics(self, outputs: jnp.ndarray,
              batch: Mapping[str, jnp.ndarray]) -> dict[str, metrics_lib.Pair]:
    """`loss` = `mse`, `nmse` (= mse / d) and the per-length pairs of the module docstring, for
    predictions outputs [B] against targets [B] (weights [B], num_examples [B])."""
    err = outputs.astype(jnp.float32) - batch["targets"].astype(jnp.float32)
    sq, w, n = err * err, batch["weights"].astype(jnp.float32), batch["num_examples"]
    nsq = sq / self.dim
    n_train = int(self.cfg.train_examples)
    mse = metrics_lib.weighted_pair(sq, w)
    out = {"loss": mse, "mse": mse, "nmse": metrics_lib.weighted_pair(nsq, w),
           "nmse_in": metrics_lib.weighted_pair(nsq, w * (n <= n_train)),
           "nmse_long": metrics_lib.weighted_pair(nsq, w * (n > n_train))}
    for length in self.eval_lengths():
      out[f"nmse_n{length}"] = metrics_lib.weighted_pair(nsq, w * (n == length))
    out["nmse_train_len"] = out[f"nmse_n{n_train}"]
    out["nmse_max_len"] = out[f"nmse_n{self.slots}"]
    growth = out["nmse_max_len"][0] - out["nmse_train_len"][0]
    count = out["nmse_train_len"][1]
    out["length_growth"] = (growth, count)
    out["length_gain"] = (-growth, count)
    return out


def _flatten(example: Batch) -> Batch:
  """{"inputs": {"tokens", "valid"}, ...} -> {"inputs/tokens", "inputs/valid", ...}."""
  return {**{f"inputs/{k}": v for k, v in example["inputs"].items()},
          **{k: v for k, v in example.items() if k != "inputs"}}


def _nest(batch: Batch) -> Batch:
  """The inverse of `_flatten`."""
  inputs = {k.split("/", 1)[1]: v for k, v in batch.items() if k.startswith("inputs/")}
  return {"inputs": inputs, **{k: v for k, v in batch.items() if not k.startswith("inputs/")}}


def curve(result: Mapping[str, float], prefix: str = "eval/") -> tuple[np.ndarray, np.ndarray]:
  """(lengths int [K], nmse float [K]) sorted by length, from a result dict's `<prefix>nmse_n<n>` keys."""
  key = prefix + "nmse_n"
  pairs = sorted((int(k[len(key):]), float(v)) for k, v in result.items()
                 if k.startswith(key) and k[len(key):].isdigit())
  return np.array([p[0] for p in pairs], int), np.array([p[1] for p in pairs])
