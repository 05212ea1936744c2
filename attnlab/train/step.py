"""The jitted train and eval steps: sharded inputs and outputs, donated state."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from attnlab.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def make_train_step(model: nn.Module, metrics_fn: Callable[[jax.Array, Batch], Metrics],
                    tx: optax.GradientTransformation, schedule: optax.Schedule,
                    seed: int) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """Returns the (unjitted) step `(state, batch) -> (state, metrics)`.

  batch: `inputs` int32 [B, T], `targets` int32 [B, T], `weights` float32 [B, T].
  Differentiates `metrics_fn(logits, batch)["loss"]` (logits [B, T, V] from
  `model.apply(..., deterministic=False)`), applies one optimizer update and
  returns the task's scalar metrics plus `learning_rate` (used by this update) and
  `grad_norm` (global L2 norm before clipping). The dropout key is
  `fold_in(fold_in(key(seed), 1), step)`, so a resumed run draws the same masks.
  Non-param collections (`state.model_state`) are applied as mutable and the
  updated values kept (e.g. k-means centroids moved by EMA).
  """
  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    dropout_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), state.step)
    mutable = sorted(state.model_state)

    def loss_fn(params):
      variables = {"params": params, **state.model_state}
      kwargs = dict(deterministic=False, rngs={"dropout": dropout_key})
      if mutable:
        logits, model_state = model.apply(variables, batch["inputs"], mutable=mutable, **kwargs)
      else:
        logits, model_state = model.apply(variables, batch["inputs"], **kwargs), state.model_state
      metrics = metrics_fn(logits, batch)
      return metrics["loss"], (metrics, dict(model_state))

    grads, (metrics, model_state) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, learning_rate=schedule(state.step), grad_norm=optax.tree.norm(grads))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              model_state=model_state)
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module, metrics_fn: Callable[[jax.Array, Batch], Metrics]
                   ) -> Callable[[Any, Batch], tuple[Metrics, jax.Array]]:
  """Returns the (unjitted) step `(variables, batch) -> (metrics, weight)`.

  variables: {"params": ..., **model_state} (`TrainState.variables()`). A
  deterministic forward pass; `metrics` are the task's scalars for this batch and
  `weight` is `sum(batch["weights"])`, for weighting batches when averaging.
  """
  def eval_step(variables: Any, batch: Batch) -> tuple[Metrics, jax.Array]:
    logits = model.apply(variables, batch["inputs"], deterministic=True)
    return metrics_fn(logits, batch), jnp.sum(batch["weights"])
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
