"""Epoch training with early stopping and the best checkpoint restored for the test
(Time-Series-Library's protocol), on the one trainer's pieces.

`train(config, workdir, run=None)` (same signature as `trainer.train`; selected when
config.train.protocol == "early_stopping") needs a task with `steps_per_epoch()`,
`epoch_batches(epoch)` and `split_batches(split)` (e.g. `forecast`):

- optimizer: Adam (optax.adam, b1 0.9, b2 0.999, eps 1e-8, no weight decay, no clipping
  unless config.train.grad_clip > 0), learning rate `train.learning_rate`, halved each
  epoch after the second (TSLib's lradj "type1": lr_e = lr * 0.5 ** max(e - 1, 0) for
  0-based epoch e); `train.lr_schedule = "constant"` keeps it fixed;
- up to `train.epochs` epochs of `steps_per_epoch()` full shuffled batches;
- after each epoch, the exact MSE over every validation window (the task's "loss");
  a strictly lower one saves the state as checkpoint <step> (keep 1); after
  `train.patience` epochs without improvement training stops;
- the best checkpoint is restored and evaluated exactly on the test split.

Writes WORKDIR/config.json, metrics.jsonl (train/loss per epoch, val/<m>, test/<m>),
results.json (the returned dict) and, if the task has `write_report(workdir,
predict)`, its report (forecast.png). Returns {"step", "best_epoch", "epochs",
"val/<m>", "test/<m>", "test/examples", "wall_s"}. A workdir whose results.json exists
is reported as is.

Resumable: after every epoch the state is also saved as WORKDIR/last/checkpoints/<step>
and the protocol's counters (epoch, best val loss and step, epochs without improvement,
wall time so far) as WORKDIR/progress.json, so a run killed at any point restarts at the
epoch after the last completed one. Epoch batches depend only on (seed, epoch) and the
dropout keys on the step, so the resumed run trains exactly as the uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from attnlab.train import metrics as mt
from attnlab.train import sharding as shd
from attnlab.train.checkpoint import Checkpointer
from attnlab.train.state import abstract_state, init_state, make_init_fn, param_count
from attnlab.train.step import jit_eval_step, jit_train_step, make_eval_step, make_train_step
from attnlab.train.trainer import _check_finite, _run_eval, setup

PROTOCOL = "early_stopping"
LR_SCHEDULES = ("halve", "constant")


def epoch_schedule(train_cfg: Any, steps_per_epoch: int) -> optax.Schedule:
  """lr * 0.5 ** max(epoch - 1, 0) with epoch = step // steps_per_epoch ("halve"), or lr ("constant")."""
  lr, kind = float(train_cfg.learning_rate), str(train_cfg.get("lr_schedule", "halve"))
  if kind not in LR_SCHEDULES:
    raise ValueError(f"config.train.lr_schedule must be one of {LR_SCHEDULES}, got {kind!r}")
  if kind == "constant":
    return optax.constant_schedule(lr)

  def schedule(step):
    epoch = jnp.asarray(step) // steps_per_epoch
    return lr * 0.5 ** jnp.maximum(epoch - 1, 0).astype(jnp.float32)
  return schedule


def make_adam(train_cfg: Any, steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(Adam with the epoch schedule [and clipping if train.grad_clip > 0], schedule)."""
  schedule = epoch_schedule(train_cfg, steps_per_epoch)
  tx = optax.adam(schedule, b1=float(train_cfg.get("b1", 0.9)), b2=float(train_cfg.get("b2", 0.999)),
                  eps=float(train_cfg.get("eps", 1e-8)))
  clip = train_cfg.get("grad_clip", None)
  if clip is not None and float(clip) > 0:
    tx = optax.chain(optax.clip_by_global_norm(float(clip)), tx)
  return tx, schedule


def _check(config: Any, task: Any) -> tuple[int, int]:
  """(epochs, patience) from config.train, and the task's epoch interface; one-line errors."""
  for name in ("steps_per_epoch", "epoch_batches", "split_batches"):
    if not hasattr(task, name):
      raise ValueError(f"train.protocol={PROTOCOL!r} needs a task with {name}(); "
                       f"task {task.name!r} has none")
  epochs, patience = int(config.train.get("epochs", 10)), int(config.train.get("patience", 3))
  if epochs < 1 or patience < 1:
    raise ValueError(f"config.train.epochs and patience must be >= 1, got {epochs}, {patience}")
  if task.steps_per_epoch() < 1:
    raise ValueError("the train split has fewer windows than one batch")
  return epochs, patience


PROGRESS_FILE = "progress.json"


def _read_progress(workdir: str) -> dict | None:
  """The counters of the last completed epoch (progress.json), or None."""
  path = os.path.join(workdir, PROGRESS_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _write_progress(workdir: str, progress: dict) -> None:
  """Writes progress.json atomically (process 0), after the epoch's `last` checkpoint is on disk."""
  if jax.process_index() == 0:
    with open(os.path.join(workdir, PROGRESS_FILE + ".tmp"), "w") as f:
      json.dump(progress, f)
    os.replace(os.path.join(workdir, PROGRESS_FILE + ".tmp"), os.path.join(workdir, PROGRESS_FILE))


def train(config: Any, workdir: str, *, task: Any = None, model: nn.Module | None = None,
          run: Any = None) -> dict[str, float]:
  """Runs the early-stopping protocol in `workdir`; returns the results (see the module doc)."""
  run = run or setup(config, task, model)
  task, model = run.task, run.model
  epochs, patience = _check(config, task)
  workdir = os.path.abspath(workdir)
  results_path = os.path.join(workdir, "results.json")
  if os.path.exists(results_path):
    with open(results_path) as f:
      mt.log(f"{results_path} exists: reporting it (delete the workdir to rerun)")
      return json.load(f)
  os.makedirs(workdir, exist_ok=True)
  mt.write_config(workdir, config)
  start_time = time.perf_counter()
  spe = task.steps_per_epoch()
  tx, schedule = make_adam(config.train, spe)
  init_fn = make_init_fn(model, tx, run.input_spec["inputs"], int(config.seed))
  abstract, shardings, _ = abstract_state(init_fn, run.mesh, run.rules)
  val_batches, test_batches = task.split_batches("val"), task.split_batches("test")
  checkpointer = Checkpointer(workdir, keep=1, async_save=False)
  last = Checkpointer(os.path.join(workdir, "last"), keep=1, async_save=False)
  progress = _read_progress(workdir)
  if progress and last.latest_step() == progress["step"]:
    state = last.restore(abstract, step=progress["step"])
    mt.log(f"resuming after epoch {progress['epoch']} (step {progress['step']}, best epoch "
           f"{progress['best_epoch']})")
  else:
    progress = None
    state = init_state(init_fn, shardings, run.rules)
    mt.log(f"initialised {param_count(abstract):,} params; up to {epochs} epochs of {spe} steps, "
           f"patience {patience}")
  p = progress or {"epoch": 0, "step": 0, "best": np.inf, "best_step": None, "best_epoch": -1,
                   "bad_epochs": 0, "best_val": {}, "stopped": False, "wall_s": 0.0}
  best, best_step, best_epoch, bad_epochs, step, best_val = (p["best"], p["best_step"], p["best_epoch"],
                                                             p["bad_epochs"], p["step"], p["best_val"])
  start_time -= p["wall_s"]
  writer = mt.MetricsWriter(workdir)
  epoch = p["epoch"] - 1
  try:
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
      train_step = jit_train_step(make_train_step(model, task.metrics, tx, schedule,
                                                  int(config.seed), run.aux_weights),
                                  shardings, run.batch_sharding, run.rules)
      eval_step = jit_eval_step(make_eval_step(model, task.metrics, task.example_count),
                                shardings.variables(), run.batch_sharding, run.rules)
      for epoch in range(p["epoch"], epochs if not p["stopped"] else p["epoch"]):
        t0, losses = time.perf_counter(), []
        for batch in task.epoch_batches(epoch):
          state, m = train_step(state, shd.put_batch(batch, run.batch_sharding))
          step += 1
          losses.append((step, m))
        losses = jax.device_get(losses)
        _check_finite(losses, checkpointer)
        val = _run_eval(eval_step, state.variables(), val_batches, run.batch_sharding)
        val = {k.replace("eval/", "val/"): v for k, v in val.items()}
        record = {"train/loss": float(np.mean([m["loss"] for _, m in losses])),
                  "train/learning_rate": float(losses[-1][1]["learning_rate"]),
                  "train/epoch_s": time.perf_counter() - t0, "epoch": epoch + 1, **val}
        writer.write(step, record)
        mt.log(f"epoch {epoch + 1}: train loss {record['train/loss']:.4f}, val mse "
               f"{val['val/mse']:.4f}, lr {record['train/learning_rate']:.2e}, "
               f"{record['train/epoch_s']:.1f}s")
        if val["val/loss"] < best:
          best, best_step, best_epoch, bad_epochs = val["val/loss"], step, epoch + 1, 0
          best_val = val
          checkpointer.save(step, state, None)
          checkpointer.wait()
        else:
          bad_epochs += 1
        stopped = bad_epochs >= patience
        last.save(step, state, None)
        last.wait()
        _write_progress(workdir, {"epoch": epoch + 1, "step": step, "best": float(best), "best_step": best_step,
                                  "best_epoch": best_epoch, "bad_epochs": bad_epochs, "best_val": best_val,
                                  "stopped": stopped, "wall_s": time.perf_counter() - start_time})
        if stopped:
          mt.log(f"early stopping after epoch {epoch + 1} (best epoch {best_epoch})")
          break
      state = checkpointer.restore(abstract, step=best_step)
      test = _run_eval(eval_step, state.variables(), test_batches, run.batch_sharding)
      test = {k.replace("eval/", "test/"): v for k, v in test.items()}
      writer.write(best_step, test)
      if hasattr(task, "write_report"):
        apply = jax.jit(lambda v, x: model.apply(v, x, deterministic=True))
        task.write_report(workdir, lambda inputs: jax.device_get(apply(state.variables(), inputs)))
  finally:
    checkpointer.close()
    last.close()
    writer.close()
  result = {"step": int(best_step), "best_epoch": best_epoch, "epochs": epoch + 1, **best_val,
            **test, "wall_s": time.perf_counter() - start_time}
  if jax.process_index() == 0:
    with open(results_path + ".tmp", "w") as f:
      json.dump(result, f, indent=1, sort_keys=True)
    os.replace(results_path + ".tmp", results_path)
  mt.log(f"test mse {test['test/mse']:.4f} mae {test['test/mae']:.4f} over "
         f"{int(test['test/examples'])} windows (best epoch {best_epoch}), "
         f"{result['wall_s']:.0f}s")
  return result
