"""`forecast`: multivariate time-series forecasting, Time-Series-Library's protocol.

Data (`attnlab.data.timeseries`): config.task.data is a CSV path in the ETT / TSLib
layout ("" = the embedded generated series); splits, a train-only z-score scaler and
`timeF` time features as TSLib. The model is chosen by config.task.model (a MODELS
key: vanilla, patchtst, itransformer, timexer, gateformer), built with
model_kwargs {"num_features": C_in, "horizon": H, "num_targets": C_out}.

Batches: inputs {"series" float32 [B, L, C_in], "marks" float32 [B, L, F]}, targets
float32 [B, H, C_out], weights float32 [B]. The model returns [B, H, C] and the task
scores its last C_out columns (the target is the last column: TSLib's f_dim = -1 for
"MS"). Metrics `loss` = `mse` and `mae`, averaged over every element of every window
of the eval split (config.task.split, "val" or "test"), on the scaled data (TSLib's
default, inverse off): eval batches cover every window once, the last padded with
weight-0 copies. Each eval result records eval/examples = the window count.

With the generic trainer (`attnlab train`) the task trains on an endless shuffled
stream of train windows and evaluates config.task.split. The TSLib protocol (epochs,
Adam, learning rate halved each epoch after the second, early stopping on validation
MSE, the best checkpoint restored for the test) is `attnlab.train.early_stopping`,
which uses `epoch_batches`, `split_batches` and `write_report` below.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, ClassVar, Iterator, Mapping

import grain
import jax
import jax.numpy as jnp
import numpy as np

from attnlab.data import pipeline
from attnlab.data import timeseries as ts
from attnlab.tasks import metrics as metrics_lib
from attnlab.tasks.base import Batch, Task
from attnlab.tasks.registry import register_task

EVAL_SPLITS = ("val", "test")


@register_task("forecast")
class ForecastTask(Task):
  """Forecast H steps of a multivariate series from the previous L steps."""

  model: ClassVar[str] = "itransformer"  # overridden per instance by config.task.model
  DEFAULTS = {"model": "itransformer", "data": "", "features": "M", "target": "OT",
              "date_column": "date", "seq_len": 96, "label_len": 48, "horizon": 96,
              "split": "test", "data_split": "auto", "freq": "", "generated_rows": 4000,
              "plot": True}
  HELP = {
      "model": "forecasting model (MODELS key): vanilla, patchtst, itransformer, timexer, gateformer",
      "data": "CSV path in the ETT / TSLib layout; '' = the embedded generated series",
      "features": "M (all -> all), S (target -> target), MS (all -> target)",
      "target": "target column (default OT)",
      "date_column": "name of the date column",
      "seq_len": "look-back length L",
      "label_len": "TSLib's decoder start length; recorded only (these models have no decoder)",
      "horizon": "forecast horizon H",
      "split": "eval split of the generic trainer: val or test",
      "data_split": "auto (ETTh*/ETTm* by name, else 70/10/20), ett_hour, ett_minute, ratio",
      "freq": "time-feature frequency h or t; '' = inferred from the dates",
      "generated_rows": "rows of the embedded generated series",
      "plot": "write forecast.png after an early-stopping run",
  }

  def __init__(self, config):
    """Reads config.task (see HELP); the data is loaded lazily (see `data`)."""
    super().__init__(config)
    self.model = str(self.cfg.model)
    self._data: ts.ForecastData | None = None

  @property
  def data(self) -> ts.ForecastData:
    """The loaded, scaled ForecastData (loaded and checked on first use)."""
    if self._data is None:
      c = self.cfg
      self._data = ts.load(c.data or None, seq_len=int(c.seq_len), horizon=int(c.horizon),
                           features=str(c.features), target=str(c.target),
                           split=str(c.data_split), date_column=str(c.date_column),
                           freq=str(c.freq) or None, generated_rows=int(c.generated_rows),
                           seed=self.seed)
    return self._data

  def validate(self) -> None:
    """Checks the keys, the model name, the split and loads the data (one-line errors)."""
    super().validate()
    from attnlab.models.forecasting import FORECAST_MODELS
    from attnlab.models.registry import MODELS
    MODELS.get(self.model)  # unknown model -> UnknownNameError listing the registered ones
    if self.model not in FORECAST_MODELS:
      raise ValueError(f"forecast: model must be one of {', '.join(FORECAST_MODELS)}, got {self.model!r}")
    if self.cfg.split not in EVAL_SPLITS:
      raise ValueError(f"forecast: split must be one of {EVAL_SPLITS}, got {self.cfg.split!r}")
    n = self.data.num_windows("train")
    if n < self.batch_size:
      raise ValueError(f"forecast: the train split has {n} windows, fewer than "
                       f"config.train.batch_size={self.batch_size}")

  # ---- inputs and model ------------------------------------------------------

  def input_spec(self) -> dict[str, Any]:
    """inputs {series [B, L, C_in], marks [B, L, F]}, targets [B, H, C_out], weights [B]."""
    d, b = self.data, self.batch_size
    f32 = jnp.float32
    return {"inputs": {"series": jax.ShapeDtypeStruct((b, d.seq_len, len(d.columns)), f32),
                       "marks": jax.ShapeDtypeStruct((b, d.seq_len, d.marks["train"].shape[1]), f32)},
            "targets": jax.ShapeDtypeStruct((b, d.horizon, len(d.target_columns)), f32),
            "weights": jax.ShapeDtypeStruct((b,), f32)}

  def model_kwargs(self) -> dict[str, Any]:
    """{"num_features": C_in, "horizon": H, "num_targets": C_out}."""
    d = self.data
    return {"num_features": len(d.columns), "horizon": d.horizon,
            "num_targets": len(d.target_columns)}

  # ---- batches -----------------------------------------------------------------

  def _batch(self, split: str, indices: np.ndarray, weights: np.ndarray) -> Batch:
    """Windows `indices` of `split` as a batch with the given row weights."""
    w = self.data.windows(split, indices)
    return {"inputs": {"series": w["series"], "marks": w["marks"]}, "targets": w["targets"],
            "weights": weights.astype(np.float32)}

  def example_fn(self, split: str) -> Callable[[int], Batch]:
    """index -> one window of `split` as an unbatched example (weight 1)."""
    def fn(index: int) -> Batch:
      """Window `index`."""
      w = self.data.window(split, int(index))
      return {"inputs": {"series": w["series"], "marks": w["marks"]}, "targets": w["targets"],
              "weights": np.float32(1.0)}
    return fn

  def train_iterator(self, shard_index: int | None = None,
                     shard_count: int | None = None) -> grain.DatasetIterator:
    """Endless checkpointable stream of train windows, reshuffled every epoch (full batches)."""
    return pipeline.train_iterator(self.example_fn("train"), batch_size=self.batch_size,
                                   seed=self.stream_seed("shuffle"),
                                   num_examples=self.data.num_windows("train"),
                                   shard_index=shard_index, shard_count=shard_count)

  def split_batches(self, split: str, shard_index: int | None = None,
                    shard_count: int | None = None) -> list[Batch]:
    """Every window of `split` once, in order: ceil(N / B) batches, the last padded with
    weight-0 copies of window 0. Global batch j holds windows j B .. j B + B - 1; host s
    of `shard_count` holds rows s B_host .. (s + 1) B_host - 1 of each."""
    shard_index, shard_count = pipeline._default_shard(shard_index, shard_count)  # pylint: disable=protected-access
    per_host = pipeline.host_batch_size(self.batch_size, shard_count)
    n = self.data.num_windows(split)
    if n < 1:
      raise ValueError(f"forecast: the {split} split has no windows")
    out = []
    for j in range(math.ceil(n / self.batch_size)):
      idx = j * self.batch_size + shard_index * per_host + np.arange(per_host)
      out.append(self._batch(split, np.where(idx < n, idx, 0), (idx < n).astype(np.float32)))
    return out

  def eval_batches(self, shard_index: int | None = None,
                   shard_count: int | None = None) -> list[Batch]:
    """`split_batches(config.task.split)`: every window of the eval split once."""
    return self.split_batches(str(self.cfg.split), shard_index, shard_count)

  def steps_per_epoch(self) -> int:
    """Full batches in one pass over the train windows (the last partial batch dropped)."""
    return self.data.num_windows("train") // self.batch_size

  def epoch_batches(self, epoch: int, shard_index: int | None = None,
                    shard_count: int | None = None) -> Iterator[Batch]:
    """One shuffled pass over the train windows (permutation seeded by config.seed and `epoch`):
    `steps_per_epoch()` full batches, this host's rows of each."""
    shard_index, shard_count = pipeline._default_shard(shard_index, shard_count)  # pylint: disable=protected-access
    per_host = pipeline.host_batch_size(self.batch_size, shard_count)
    perm = np.random.default_rng([self.stream_seed("shuffle"), epoch]).permutation(
        self.data.num_windows("train"))
    for j in range(self.steps_per_epoch()):
      rows = perm[j * self.batch_size + shard_index * per_host:][:per_host]
      yield self._batch("train", rows, np.ones(per_host, np.float32))

  # ---- metrics -------------------------------------------------------------------

  def predictions(self, outputs: jnp.ndarray) -> jnp.ndarray:
    """The scored part of the model's outputs [B, H, C]: its last C_out columns -> [B, H, C_out]."""
    return outputs[..., -len(self.data.target_columns):]

  def metrics(self, outputs: jnp.ndarray,
              batch: Mapping[str, jnp.ndarray]) -> dict[str, metrics_lib.Pair]:
    """`loss` (= mse), `mse` and `mae` pairs over every element of the weighted windows."""
    return metrics_lib.regression_metrics(self.predictions(outputs), batch)

  # ---- report ----------------------------------------------------------------------

  def write_report(self, workdir: str, predict: Callable[[Any], np.ndarray]) -> str | None:
    """Writes WORKDIR/forecast.png: the look-back, truth and forecast of the target column on
    the first and last test windows; `predict(inputs)` returns outputs [B, H, C]. Returns the path."""
    if not self.cfg.plot or jax.process_index() != 0:
      return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    d, n = self.data, self.data.num_windows("test")
    batch = self._batch("test", np.array([0, n - 1]), np.ones(2, np.float32))
    pred = np.asarray(self.predictions(predict(batch["inputs"])))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    for ax, row, name in zip(axes, range(2), ("first", "last")):
      lookback = batch["inputs"]["series"][row, :, -1]
      t_in, t_out = np.arange(-d.seq_len, 0), np.arange(d.horizon)
      ax.plot(t_in, lookback, color="0.4", label="look-back")
      ax.plot(t_out, batch["targets"][row, :, -1], color="k", label="truth")
      ax.plot(t_out, pred[row, :, -1], color="tab:red", label="forecast")
      ax.set_title(f"{d.target_columns[-1]}, {name} test window ({self.model})")
      ax.set_xlabel("step")
    axes[0].set_ylabel("scaled value")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = os.path.join(workdir, "forecast.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
