"""The one trainer for every task: `train(config, workdir)` and `evaluate(config, workdir)`.

Order of work: build the task -> `task.validate()` -> build the model -> mesh, rules
and every static check (batch divisibility, parameter shardability) -> only then
compile and run. A run resumes automatically from the newest checkpoint in
WORKDIR/checkpoints (params, optimizer state, step and data-iterator position).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils

from attnlab.train import fault_hooks
from attnlab.train import metrics as mt
from attnlab.train import sharding as shd
from attnlab.train import stop_at as stop_lib
from attnlab.train.checkpoint import Checkpointer
from attnlab.train.mesh import make_mesh
from attnlab.train.nonfinite import GRAD_FINITE, first_nonfinite, grad_names
from attnlab.train.state import (TrainState, abstract_state, aux_loss_names, init_state,
                                 make_init_fn, make_optimizer, param_count)
from attnlab.train.step import jit_eval_step, jit_train_step, make_eval_step, make_train_step

# Test hook: when set to a step number, the process SIGKILLs itself right after the
# checkpoint of that step is fully on disk (used to test crash/resume). The other fault
# hooks (kill at a phase of a step, NaN injection) are in `fault_hooks`.
KILL_AFTER_CHECKPOINT_ENV = fault_hooks.KILL_AFTER_CHECKPOINT_ENV


@dataclasses.dataclass
class _Run:
  """Everything built and checked before compiling."""
  config: Any
  task: Any
  model: nn.Module
  mesh: jax.sharding.Mesh
  rules: tuple
  tx: Any
  schedule: Callable
  init_fn: Callable[[], TrainState]
  abstract: TrainState
  shardings: TrainState
  batch_sharding: jax.sharding.NamedSharding
  eval_batches: list
  input_spec: dict
  aux_weights: dict


def _every(value: Any) -> int:
  """Interval config value -> int (None or <= 0 means "only at the end")."""
  return int(value) if value is not None and int(value) > 0 else 0


def _check_batch(name: str, batch: dict, spec: dict, rows: int) -> None:
  """Raises a one-line ValueError unless `batch` matches the task's `input_spec()` layout
  (same keys and trailing shapes, leading axis `rows`, same dtype kind)."""
  flat_spec = dict(jax.tree_util.tree_flatten_with_path(spec)[0])
  flat_batch = dict(jax.tree_util.tree_flatten_with_path(batch)[0])
  for path, s in flat_spec.items():
    key = jax.tree_util.keystr(path)
    if path not in flat_batch:
      raise ValueError(f"{name} batch has no {key} (the task's input_spec has it)")
    value = flat_batch[path]
    shape, want = tuple(np.shape(value)), (rows,) + tuple(s.shape[1:])
    if shape != want:
      raise ValueError(f"{name} batch {key} has shape {shape}, expected {want}")
    if np.asarray(value).dtype.kind != np.dtype(s.dtype).kind:
      raise ValueError(f"{name} batch {key} has dtype {np.asarray(value).dtype}, expected {s.dtype}")


def _check_config(config: Any, mesh: jax.sharding.Mesh) -> None:
  """Static checks on config.train against the mesh; one-line ValueErrors."""
  tc = config.train
  if int(tc.steps) < 1:
    raise ValueError(f"config.train.steps must be >= 1, got {tc.steps}")
  if not float(tc.learning_rate) > 0:
    raise ValueError(f"config.train.learning_rate must be > 0, got {tc.learning_rate}")
  batch, shards = int(tc.batch_size), shd.batch_shards(mesh)
  if batch < 1 or batch % shards:
    raise ValueError(
        f"config.train.batch_size={batch} must be a positive multiple of mesh data*fsdp={shards}")
  if batch % jax.process_count():
    raise ValueError(f"config.train.batch_size={batch} is not divisible by {jax.process_count()} processes")
  if int(tc.get("warmup_steps", 0)) < 0:
    raise ValueError(f"config.train.warmup_steps must be >= 0, got {tc.warmup_steps}")
  if float(tc.get("weight_decay", 0.0)) < 0:
    raise ValueError(f"config.train.weight_decay must be >= 0, got {tc.weight_decay}")
  for beta in ("b1", "b2"):
    if not 0 <= float(tc.get(beta, 0.9)) < 1:
      raise ValueError(f"config.train.{beta} must be in [0, 1), got {tc.get(beta)}")
  protocols = ("steps", "early_stopping")
  if tc.get("protocol", "steps") not in protocols:
    raise ValueError(f"config.train.protocol must be one of {protocols}, got {tc.get('protocol')!r}")
  if int(tc.get("warmup_steps", 0)) > int(tc.steps):
    raise ValueError(f"config.train.warmup_steps={tc.warmup_steps} exceeds steps={tc.steps}")
  if _every(tc.get("log_every", 1)) < 1:
    raise ValueError(f"config.train.log_every must be >= 1, got {tc.get('log_every')}")
  stop_lib.parse(tc.get("stop_at", ""))


def setup(config: Any, task: Any = None, model: nn.Module | None = None) -> _Run:
  """Builds task, model, mesh and abstract state, running every check; compiles nothing.

  `task` / `model` override `build_task(config)` / `build_model(config.model, ...)`
  (for notebooks and tests).
  """
  if task is None:
    from attnlab.tasks import build_task
    task = build_task(config)
  task.validate()
  if model is None:
    from attnlab.models import build_task_model
    model = build_task_model(config.model, task)
  mesh = make_mesh(config.mesh)
  rules = shd.logical_rules(config)
  _check_config(config, mesh)
  tx, schedule = make_optimizer(config.train)
  spec = task.input_spec()
  init_fn = make_init_fn(model, tx, spec["inputs"], int(config.seed))
  abstract, shardings, notes = abstract_state(init_fn, mesh, rules)
  aux_weights = dict(config.train.get("aux_loss_weights", None) or {})
  with nn.logical_axis_rules(rules):
    missing = sorted(set(aux_loss_names(model, abstract, spec["inputs"])) - set(aux_weights))
  if missing:
    raise ValueError(f"the model sows auxiliary losses {missing}: set their weights in "
                     f"config.train.aux_loss_weights (e.g. --config.train.aux_loss_weights.{missing[0]}=0.01)")
  # The optimizer state mirrors the params: report each params-level change once.
  for note in notes:
    if " of .opt_state" not in note:
      mt.log(note)
  eval_batches = list(task.eval_batches())
  local_rows = shd.batch_shards(mesh) // jax.process_count()
  for i, b in enumerate(eval_batches):
    rows = int(np.shape(jax.tree.leaves(b)[0])[0])
    _check_batch(f"eval[{i}]", b, spec, rows)
    if rows % max(local_rows, 1):
      raise ValueError(f"eval batch {i} has {rows} rows, not divisible by mesh data*fsdp per process")
  return _Run(config, task, model, mesh, rules, tx, schedule, init_fn, abstract, shardings,
              shd.batch_sharding(mesh), eval_batches, spec, aux_weights)


def jitted_train_step(run: _Run) -> Callable:
  """`run`'s jitted train step `(state, batch) -> (state, metrics)`: state in and out in
  `run.shardings` (donated), batch split over (data, fsdp). Trace it under
  `jax.set_mesh(run.mesh)` and `nn.logical_axis_rules(run.rules)`."""
  return jit_train_step(
      make_train_step(run.model, run.task.metrics, run.tx, run.schedule, int(run.config.seed),
                      run.aux_weights),
      run.shardings, run.batch_sharding, run.rules)


def _run_eval(eval_step, variables: Any, batches: list, sharding) -> dict[str, float]:
  """Exact eval metrics over `batches`: {"eval/<name>": Σ sum / Σ count, "eval/examples": N}.

  Sums are accumulated in float64 on the host, so the result does not depend on how the
  examples are split into batches.
  """
  if not batches:
    return {}
  outs = jax.device_get([eval_step(variables, shd.put_batch(b, sharding)) for b in batches])
  result = {}
  for key in outs[0][0]:
    total = sum(np.float64(pairs[key][0]) for pairs, _ in outs)
    count = sum(np.float64(pairs[key][1]) for pairs, _ in outs)
    result[f"eval/{key}"] = float(total / count) if count > 0 else float("nan")
  result["eval/examples"] = float(sum(np.float64(n) for _, n in outs))
  return result


def _check_finite(host_metrics: list[tuple[int, dict]], checkpointer: Checkpointer,
                  names: list[str] | None = None) -> None:
  """Raises FloatingPointError naming the first step whose train loss, or one of whose
  gradient tensors (`names`: `nonfinite.grad_names(params)`), is not finite, and that tensor."""
  bad = first_nonfinite(host_metrics, names)
  if bad is not None:
    step, what, loss = bad
    raise FloatingPointError(
        f"non-finite {what} at step {step} (loss={loss}); latest checkpoint: "
        f"step {checkpointer.latest_step()}; lower config.train.learning_rate or check the data")


def _window_means(host_metrics: list[tuple[int, dict]]) -> dict[str, float]:
  """Mean of each train metric over the logged window -> {"train/<name>": value}."""
  keys = [k for k in host_metrics[0][1] if k != GRAD_FINITE]
  return {f"train/{k}": float(np.mean([np.float64(np.asarray(m[k])) for _, m in host_metrics]))
          for k in keys}


def _maybe_kill(step: int, checkpointer: Checkpointer) -> None:
  """Test hook: SIGKILLs this process once checkpoint `step` is on disk, if asked to."""
  target = os.environ.get(KILL_AFTER_CHECKPOINT_ENV)
  if target is not None and int(target) == step:
    checkpointer.wait()
    if jax.process_count() > 1:  # every process has finished its part of the checkpoint
      multihost_utils.sync_global_devices(f"attnlab-kill-after-{step}")
    os.kill(os.getpid(), signal.SIGKILL)


def train(config: Any, workdir: str, *, task: Any = None, model: nn.Module | None = None,
          run: _Run | None = None) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns final eval metrics.

  Writes WORKDIR/config.json, metrics.jsonl, TensorBoard events and checkpoints/.
  Returns {"step": config.train.steps, "eval/loss": ..., "eval/accuracy": ...,
  "eval/examples": N} (the task's metrics, exact over all of `task.eval_batches()`). Raises FloatingPointError
  naming the step and the first non-finite tensor if the train loss or a gradient
  becomes non-finite (checked at every log step and before every checkpoint, so no
  non-finite state is ever saved). An unreadable newest checkpoint is skipped with a
  warning (see `Checkpointer.restore_latest`); a failed checkpoint write raises
  `CheckpointWriteError` naming the step and directory.
  """
  run = run or setup(config, task, model)  # every input check happens before anything is written
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  mt.write_config(workdir, config)
  tc = config.train
  total = int(tc.steps)
  log_every = _every(tc.get("log_every", 100)) or total
  eval_every, ckpt_every = _every(tc.get("eval_every", 0)), _every(tc.get("checkpoint_every", 0))
  local_rows = int(tc.batch_size) // jax.process_count()

  checkpointer = Checkpointer(workdir, keep=tc.get("keep_checkpoints", 3))
  writer = mt.MetricsWriter(workdir)
  iterator = run.task.train_iterator()
  kill_at = fault_hooks.KillAt(workdir)
  names = grad_names(run.abstract.params)
  stop = stop_lib.parse(tc.get("stop_at", ""))
  progress = None
  try:
    # An unreadable newest checkpoint is reported and set aside, and the previous one used
    # (config.train.restore_fallback=False makes it an error instead).
    start, state = checkpointer.restore_latest(run.abstract, iterator,
                                               fallback=bool(tc.get("restore_fallback", True)))
    if start is None:
      start = 0
      writer.truncate_after(0)  # records of a run killed before its first checkpoint
      state = init_state(run.init_fn, run.shardings, run.rules)
      mt.log(f"initialised {param_count(run.abstract):,} params on mesh "
             f"{dict(run.mesh.shape)}; training {total} steps")
    else:
      writer.truncate_after(start)
      mt.log(f"resumed from step {start}")
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
      train_step = jitted_train_step(run)
      eval_step = jit_eval_step(make_eval_step(run.model, run.task.metrics, run.task.example_count),
                                run.shardings.variables(), run.batch_sharding, run.rules)

      final: dict[str, float] = {}
      stopped = stop_lib.stopped_step(workdir) if stop else None
      if start >= total or (stopped is not None and stopped == start):
        final = _run_eval(eval_step, state.variables(), run.eval_batches, run.batch_sharding)
        if stopped is not None:
          mt.log(f"stopped at step {start} earlier ({stop} met); not training further")
          return {"step": start, "stopped_early": 1, **final}
      progress = mt.Progress(total, start)
      pending: list[tuple[int, dict]] = []
      mark_time, mark_step = time.perf_counter(), start
      for step in range(start + 1, total + 1):  # `step` = number of updates done after this one
        try:
          batch = next(iterator)
        except StopIteration:
          raise RuntimeError(f"train iterator ran out at step {step} of {total}") from None
        if step == start + 1:
          _check_batch("train", batch, run.input_spec, local_rows)
        state, step_metrics = train_step(state, shd.put_batch(batch, run.batch_sharding))
        kill_at.at("step", step)
        pending.append((step, step_metrics))
        progress.advance(step)
        is_last = step == total
        is_log = step % log_every == 0 or is_last
        is_eval = (eval_every and step % eval_every == 0) or is_last
        is_ckpt = (ckpt_every and step % ckpt_every == 0) or is_last
        if is_log or is_ckpt:
          pending = jax.device_get(pending)
          _check_finite(pending, checkpointer, names)
        if is_log:
          now = time.perf_counter()
          scalars = _window_means(pending)
          scalars["train/steps_per_sec"] = (step - mark_step) / max(now - mark_time, 1e-9)
          progress.report(writer.write(step, scalars), scalars["train/steps_per_sec"])
          pending, mark_time, mark_step = [], now, step
        if is_eval:
          kill_at.at("eval", step)
          final = _run_eval(eval_step, state.variables(), run.eval_batches, run.batch_sharding)
          if final:
            progress.report(writer.write(step, final))
          if stop and final and stop.met(final) and not is_last:
            checkpointer.save(step, state, iterator)
            checkpointer.wait()
            stop_lib.mark(workdir, step, stop, final)
            mt.log(f"step {step}: {stop} met; stopping early")
            return {"step": step, "stopped_early": 1, **final}
        if is_ckpt:
          checkpointer.save(step, state, iterator)
          kill_at.at("checkpoint", step)
          _maybe_kill(step, checkpointer)
        if is_eval or is_ckpt:
          mark_time, mark_step = time.perf_counter(), step
        kill_at.at("between", step)
  finally:
    if progress is not None:
      progress.close()
    checkpointer.close()
    writer.close()
  return {"step": total, **final}


def evaluate(config: Any, workdir: str, *, task: Any = None, model: nn.Module | None = None,
             step: int | None = None, run: _Run | None = None) -> dict[str, float]:
  """Restores checkpoint `step` (default: latest) from `workdir` and evaluates it.

  Returns {"step": N, "eval/<name>": value, ...} over `task.eval_batches()`; writes
  nothing. Raises FileNotFoundError if the workdir has no checkpoint.
  """
  run = run or setup(config, task, model)
  checkpointer = Checkpointer(os.path.abspath(workdir), keep=None, read_only=True)
  try:
    step = checkpointer.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {checkpointer.directory}")
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
      state = checkpointer.restore(run.abstract, step=step)
      eval_step = jit_eval_step(make_eval_step(run.model, run.task.metrics, run.task.example_count),
                                run.shardings.variables(), run.batch_sharding, run.rules)
      result = _run_eval(eval_step, state.variables(), run.eval_batches, run.batch_sharding)
  finally:
    checkpointer.close()
  return {"step": int(step), **result}
