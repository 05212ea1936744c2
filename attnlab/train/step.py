"""The jitted train and eval steps: sharded inputs and outputs, donated state, auxiliary losses."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from attnlab.train import fault_hooks
from attnlab.train.nonfinite import GRAD_FINITE, finite_flags
from attnlab.train.state import AUX_COLLECTION, TrainState, sown_losses

Batch = dict[str, Any]
Pairs = dict[str, tuple[jax.Array, jax.Array]]
Metrics = dict[str, jax.Array]

def _ratio(pair) -> jax.Array:
  total, count = pair
  return total / jnp.maximum(count, 1e-8)


def make_train_step(model: nn.Module, metrics_fn: Callable[[Any, Batch], Pairs],
                    tx: optax.GradientTransformation, schedule: optax.Schedule, seed: int,
                    aux_weights: Mapping[str, float] | None = None
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """Returns the (unjitted) step `(state, batch) -> (state, metrics)`.

  batch: the task's batch (`inputs` is whatever the model takes). The objective is
  sum / count of `metrics_fn(outputs, batch)["loss"]` (outputs from
  `model.apply(variables, batch["inputs"], deterministic=False)`) plus, for every
  auxiliary loss NAME a variant sows into the "losses" collection (summed over layers),
  `aux_weights[NAME] * value`. Returns the task's metrics (sum / count), `aux/NAME` for
  each sown loss (unweighted), `objective` (what was differentiated, when any loss is sown), `learning_rate`
  (used by this update), `grad_norm` (global L2 norm before clipping) and `grad_finite`
  (bool [param leaves]: which gradient tensors are finite; see `nonfinite`). The dropout
  key is `fold_in(fold_in(key(seed), 1), step)`, so a resumed run draws the same masks.
  Non-param collections (`state.model_state`) are applied as mutable and the updated
  values kept (e.g. k-means centroids moved by EMA). The test hook ATTNLAB_TEST_INJECT_NAN
  (`fault_hooks`) is read here, once.
  """
  aux_weights = dict(aux_weights or {})
  inject = fault_hooks.nan_injection()

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    dropout_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), state.step)
    mutable = sorted(state.model_state) + [AUX_COLLECTION]

    def loss_fn(params):
      variables = {"params": params, **state.model_state}
      outputs, new_vars = model.apply(variables, batch["inputs"], mutable=mutable,
                                      deterministic=False, rngs={"dropout": dropout_key})
      new_vars = dict(new_vars)
      aux = sown_losses(new_vars.pop(AUX_COLLECTION, {}))
      missing = sorted(set(aux) - set(aux_weights))
      if missing:
        raise ValueError(f"the model sows auxiliary losses {missing} with no weight in "
                         f"config.train.aux_loss_weights (has: {sorted(aux_weights)})")
      pairs = metrics_fn(outputs, batch)
      objective = _ratio(pairs["loss"]) + sum(aux_weights[k] * v for k, v in aux.items())
      metrics = {k: _ratio(p) for k, p in pairs.items()}
      metrics.update({f"aux/{k}": v for k, v in aux.items()})
      if aux:
        metrics["objective"] = objective
      if inject is not None and inject[0] == "loss":  # test hook: loss (and so grads) NaN at step K
        scale = fault_hooks.nan_scale(state.step, inject[1])
        objective = objective * scale
        metrics = {k: v * scale if k in ("loss", "objective") else v for k, v in metrics.items()}
      return objective, (metrics, {k: new_vars[k] for k in state.model_state})

    grads, (metrics, model_state) = jax.grad(loss_fn, has_aux=True)(state.params)
    if inject is not None and inject[0].startswith("grad:"):  # test hook: one gradient NaN at step K
      grads = fault_hooks.poison_grads(grads, inject[0][len("grad:"):],
                                       fault_hooks.nan_scale(state.step, inject[1]))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, learning_rate=schedule(state.step), grad_norm=optax.tree.norm(grads),
                   **{GRAD_FINITE: finite_flags(grads)})
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              model_state=model_state)
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module, metrics_fn: Callable[[Any, Batch], Pairs],
                   count_fn: Callable[[Batch], jax.Array]
                   ) -> Callable[[Any, Batch], tuple[Pairs, jax.Array]]:
  """Returns the (unjitted) step `(variables, batch) -> (pairs, examples)`.

  variables: {"params": ..., **model_state} (`TrainState.variables()`). A deterministic
  forward pass; `pairs` are the task's (sum, count) metrics for this batch and `examples`
  is `count_fn(batch)`, the number of examples in it that count. Summed over batches they
  give exact eval metrics.
  """
  def eval_step(variables: Any, batch: Batch) -> tuple[Pairs, jax.Array]:
    outputs = model.apply(variables, batch["inputs"], deterministic=True)
    return metrics_fn(outputs, batch), count_fn(batch)
  return eval_step


def jit_train_step(step_fn, state_shardings: TrainState, batch_sharding, rules):
  """Jits the train step: state in/out in its shardings (donated), batch split on (data, fsdp).

  The logical axis rules are bound at trace time so activations' logical
  constraints inside the model resolve to mesh axes.
  """
  def traced(state, batch):
    with nn.logical_axis_rules(rules):
      return step_fn(state, batch)
  return jax.jit(traced, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=(0,))


def jit_eval_step(step_fn, variables_shardings: Any, batch_sharding, rules):
  """Jits the eval step with variables and batch in their shardings; metrics replicated.

  variables_shardings: `state_shardings.variables()`.
  """
  def traced(variables, batch):
    with nn.logical_axis_rules(rules):
      return step_fn(variables, batch)
  return jax.jit(traced, in_shardings=(variables_shardings, batch_sharding), out_shardings=None)
