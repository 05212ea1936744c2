"""Train state, optimizer and the sharded initialisation of both.

Init flow (DESIGN.md "Training"): `jax.eval_shape(init)` -> logical partition specs
of the boxed params (and of the optimizer state, which mirrors them) -> NamedShardings
via the logical axis rules -> `jax.jit(init, out_shardings=...)`, so every array is
created directly in its final sharding and no host ever holds the full model.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from attnlab.train import sharding as shd


@flax.struct.dataclass
class TrainState:
  """What a checkpoint holds besides the data iterator.

  step: integer scalar, the number of updates applied so far.
  params: the model's parameters (plain arrays, logical boxes removed).
  opt_state: the optax state for `params`.
  model_state: the model's other variable collections, e.g. {"kmeans": ...} for
    k-means centroids; updated by the train step (mutable), read by eval; {} if none.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any

  def variables(self) -> dict[str, Any]:
    """The `model.apply` variables: {"params": params, **model_state}."""
    return {"params": self.params, **self.model_state}


# Collections that are per-call scratch, never part of the train state ("losses" holds the
# auxiliary losses variants sow, recomputed at every step).
AUX_COLLECTION = "losses"
TRANSIENT_COLLECTIONS = ("params", "cache", "intermediates", AUX_COLLECTION)


def sown_losses(collection: Any) -> dict[str, jax.Array]:
  """{NAME: total} from a "losses" collection: every value sown under NAME, in any layer, summed."""
  totals: dict[str, jax.Array] = {}
  for path, values in traverse_util.flatten_dict(dict(collection)).items():
    for value in (values if isinstance(values, tuple) else (values,)):
      totals[path[-1]] = totals.get(path[-1], 0.0) + jnp.sum(jnp.asarray(value, jnp.float32))
  return totals


def _get(cfg: Any, name: str, default: Any) -> Any:
  return cfg.get(name, default) if hasattr(cfg, "get") else getattr(cfg, name, default)


def make_schedule(train_cfg: Any) -> optax.Schedule:
  """Returns the learning-rate schedule: linear warmup from 0, then cosine decay.

  Peaks at `train.learning_rate` after `train.warmup_steps` and decays to
  `train.end_learning_rate` (default 0) at `train.steps`.
  """
  steps = int(train_cfg.steps)
  warmup = int(_get(train_cfg, "warmup_steps", 0))
  peak = float(train_cfg.learning_rate)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup,
      decay_steps=max(steps, warmup + 1), end_value=float(_get(train_cfg, "end_learning_rate", 0.0)))


def _decay_mask(params: Any) -> Any:
  """Weight decay on matrices only (ndim >= 2): not on biases, norms' scales."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(train_cfg: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (AdamW with global-norm clipping and the warmup-cosine schedule, schedule).

  Reads `train.learning_rate, warmup_steps, steps, weight_decay, grad_clip` and the
  optional `train.b1` (0.9), `train.b2` (0.999), `train.eps` (1e-8). `grad_clip`
  <= 0 or None disables clipping.
  """
  schedule = make_schedule(train_cfg)
  adamw = optax.adamw(
      schedule, b1=float(_get(train_cfg, "b1", 0.9)), b2=float(_get(train_cfg, "b2", 0.999)),
      eps=float(_get(train_cfg, "eps", 1e-8)),
      weight_decay=float(_get(train_cfg, "weight_decay", 0.0)), mask=_decay_mask)
  clip = _get(train_cfg, "grad_clip", None)
  if clip is not None and float(clip) > 0:
    return optax.chain(optax.clip_by_global_norm(float(clip)), adamw), schedule
  return adamw, schedule


def zeros_like_spec(spec: Any) -> Any:
  """Zeros for a pytree of jax.ShapeDtypeStruct (a task's `input_spec()["inputs"]`)."""
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), spec)


def make_init_fn(model: nn.Module, tx: optax.GradientTransformation, inputs_spec: Any,
                 seed: int) -> Callable[[], TrainState]:
  """Returns `init() -> TrainState` with *boxed* params (nn.LogicallyPartitioned).

  `inputs_spec` is the task's `input_spec()["inputs"]` (a ShapeDtypeStruct or a pytree
  of them): the model is traced on zeros of that shape and dtype, whatever the inputs
  are (tokens, images, series). Variable collections other than params (and the
  transient ones, TRANSIENT_COLLECTIONS) become `model_state`. Params come from
  `fold_in(key(seed), 0)`; the optimizer state is built on the boxed params so it
  carries the same logical annotations.
  """
  def init() -> TrainState:
    key = jax.random.fold_in(jax.random.key(seed), 0)
    variables = model.init({"params": key, "dropout": key}, zeros_like_spec(inputs_spec),
                           deterministic=True)
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k not in TRANSIENT_COLLECTIONS}
    return TrainState(step=jnp.asarray(0), params=params, opt_state=tx.init(params),
                      model_state=model_state)
  return init


def aux_loss_names(model: nn.Module, abstract: TrainState, inputs_spec: Any) -> list[str]:
  """Names of the auxiliary losses `model` sows in a training forward pass (traced by
  `jax.eval_shape` on the abstract state: nothing is computed or compiled)."""
  def forward(variables):
    _, sown = model.apply(variables, zeros_like_spec(inputs_spec), mutable=True,
                          deterministic=False, rngs={"dropout": jax.random.key(0)})
    return sown
  plain = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), abstract.variables())
  sown = jax.eval_shape(forward, plain)
  return sorted({path[-1] for path in traverse_util.flatten_dict(dict(sown.get(AUX_COLLECTION, {})))})


def abstract_state(init_fn: Callable[[], TrainState], mesh, rules
                   ) -> tuple[TrainState, TrainState, list[str]]:
  """Returns (abstract unboxed state with shardings attached, tree of NamedShardings, notes).

  Runs `init_fn` under `jax.eval_shape` only (no FLOPs, no memory). A dim that
  its mesh axes do not divide is replicated instead; `notes` describes each such
  change in one line (see `sharding.fit_shardings`). Call it
  outside `jax.set_mesh`: the specs come from the params' logical boxes, and
  constraints applied while *initialising* (e.g. by `nn.DenseGeneral`'s reshaped
  boxed kernels) are neither needed nor always valid.
  """
  with nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(init_fn)
  plain = nn.meta.unbox(boxed)
  shardings, notes = shd.fit_shardings(plain, shd.tree_shardings(boxed, mesh, rules),
                                       nn.get_partition_spec(boxed))
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), plain, shardings)
  return abstract, shardings, notes


def init_state(init_fn: Callable[[], TrainState], shardings: TrainState, rules) -> TrainState:
  """Returns the initial TrainState, each array created directly in its sharding.

  Like `abstract_state`, call it outside `jax.set_mesh`; `shardings` carry the mesh.
  """
  with nn.logical_axis_rules(rules):
    return jax.jit(lambda: nn.meta.unbox(init_fn()), out_shardings=shardings)()


def param_count(abstract: TrainState) -> int:
  """Returns the number of scalar parameters in `abstract.params`."""
  return int(sum(x.size for x in jax.tree.leaves(abstract.params)))
