"""Capturing what a model's attention layers imply: weights, hidden states, gradients.

Every analysis method starts here. The hooks live in the variants
(`attention.variants.base.AttentionModule`): an `apply` that makes the "attention"
collection mutable runs each layer's reference path (fp32, materialised) and sows the
matrix it applies to the values (softmax weights, a sparse variant's masked matrix, a
linear variant's normalised phi(q) . phi(k) with decays); passing a "perturbations"
collection of zeros makes the gradient with respect to it the gradient with respect to
those weights; a "head_gates" collection of ones multiplies each head's output (Michel et
al., 2019). A training call names none of them, so nothing here changes how a model trains.

Shapes: B inputs, L layers, H heads, T positions. Weights per layer [B, H, T, T].
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from attnlab.attention import build
from attnlab.attention.variants.base import ATTENTION, HEAD_GATES, PERTURBATIONS

_LAYER = re.compile(r"layer_(\d+)$")


@dataclasses.dataclass(frozen=True)
class LayerInfo:
  """What one layer's captured weights mean: its variant, `weight_kind` ("probability" |
  "nonnegative" | "signed") and `unavailable` (None, or why the variant cannot return weights)."""
  variant: str
  weight_kind: str
  unavailable: str | None


def layer_infos(backbone_cfg) -> list[LayerInfo]:
  """One `LayerInfo` per layer of a `models.TransformerConfig` (builds each layer's module,
  unbound; compiles nothing)."""
  infos = []
  for i, name in enumerate(backbone_cfg.layer_variants):
    module = build(name, **backbone_cfg.layer_hparams(i))
    infos.append(LayerInfo(name, module.weight_kind, module.weights_unavailable))
  return infos


def refusal(infos: list[LayerInfo], kinds=("probability", "nonnegative", "signed")) -> str | None:
  """The one-line reason a method that needs every layer's weights, of one of `kinds`,
  refuses these layers, or None when it can run."""
  for i, info in enumerate(infos):
    if info.unavailable is not None:
      return f"layer {i} ({info.variant}) cannot return its attention weights: {info.unavailable}"
    if info.weight_kind not in kinds:
      return (f"layer {i} ({info.variant}) has {info.weight_kind} attention weights; this method needs "
              f"{' or '.join(kinds)} weights")
  return None


def _by_layer(collection: Any, name: str) -> list[Any]:
  """The values sown as `name`, ordered by the enclosing "layer_<i>" module (one per layer)."""
  found = {}
  for path, value in traverse_util.flatten_dict(dict(collection)).items():
    if path[-1] != name:
      continue
    layer = [int(m.group(1)) for p in path if (m := _LAYER.match(str(p)))]
    if not layer:
      raise ValueError(f"sown {name!r} at {'/'.join(map(str, path))} is outside a layer_<i> module")
    found[layer[-1]] = value[0] if isinstance(value, tuple) else value
  return [found[i] for i in sorted(found)]


def capture(model, variables: Any, inputs: Any, **kwargs) -> dict[str, Any]:
  """One analysis forward pass (jit it for repeated use).

  Returns {"outputs": the model's outputs, "weights": [L] of [B, H, T, T] fp32,
  "hidden": [L] of [B, T, d] (residual stream after each block), "head_outputs": [L] of
  [B, T, H, Dv] (each head's output before the output projection, head gates applied)}. A layer whose variant
  has no weights hook contributes nothing: check `refusal(layer_infos(...))` first.
  """
  outputs, state = model.apply(variables, inputs, deterministic=True, mutable=[ATTENTION], **kwargs)
  return {"outputs": outputs, "weights": _by_layer(state[ATTENTION], "weights"),
          "hidden": _by_layer(state[ATTENTION], "hidden"),
          "head_outputs": _by_layer(state[ATTENTION], "head_outputs")}


def zero_perturbations(model, variables: Any, inputs: Any) -> Any:
  """The "perturbations" collection (zeros shaped as each layer's weights) for
  `weight_gradients`."""
  _, state = model.apply(variables, inputs, deterministic=True, mutable=[ATTENTION, PERTURBATIONS])
  return state[PERTURBATIONS]


def weight_gradients(model, variables: Any, inputs: Any, loss: Callable[[Any], jax.Array]):
  """(captured, grads): `capture`'s dict and d loss(outputs) / d weights, [L] of
  [B, H, T, T], through the "perturbations" hook (the weights' own gradient, as Chefer et
  al., 2021 use it). `loss(outputs) -> scalar`."""
  zeros = zero_perturbations(model, variables, inputs)

  def f(perturbations):
    captured = capture(model, {**variables, PERTURBATIONS: perturbations}, inputs)
    return loss(captured["outputs"]), captured

  grads, captured = jax.grad(f, has_aux=True)(zeros)
  return captured, _by_layer(grads, "weights")


def unit_head_gates(model, variables: Any, inputs: Any) -> Any:
  """The "head_gates" collection, every xi_h = 1 ([H] per layer)."""
  _, state = model.apply(variables, inputs, deterministic=True, mutable=[HEAD_GATES])
  return state[HEAD_GATES]


def gates_array(gates: Any) -> np.ndarray:
  """A "head_gates" collection -> float [L, H] (layers in order)."""
  return np.stack([np.asarray(g) for g in _by_layer(gates, "xi")])


def gates_from_array(gates: Any, values) -> Any:
  """A "head_gates" collection shaped as `gates` with xi of layer l set to values[l] ([L, H])."""
  flat = traverse_util.flatten_dict(dict(gates))
  order = sorted((p for p in flat if p[-1] == "xi"),
                 key=lambda p: [int(m.group(1)) for q in p if (m := _LAYER.match(str(q)))][-1])
  for layer, path in enumerate(order):
    flat[path] = jnp.asarray(values[layer], jnp.float32)
  return traverse_util.unflatten_dict(flat)


def gated_apply(model, variables: Any, inputs: Any, gates: Any):
  """The model's outputs with head gates `gates` (a "head_gates" collection) applied."""
  return model.apply({**variables, HEAD_GATES: gates}, inputs, deterministic=True)


__all__ = ["LayerInfo", "capture", "gated_apply", "gates_array", "gates_from_array", "layer_infos",
           "refusal", "unit_head_gates", "weight_gradients", "zero_perturbations"]
