"""Models: input adapter -> Transformer backbone -> head, registered by name in MODELS.

`build_model(config.model, task.model, **task.model_kwargs())` builds the model a task
names ("lm", "classifier", "forecaster"); `transformer_config(config.model)` validates the
backbone's part of the config (one-line ValueErrors, before anything compiles).
"""

from __future__ import annotations

from typing import Any

from attnlab.models import classifier as _classifier  # noqa: F401  (registers "classifier")
from attnlab.models import forecaster as _forecaster  # noqa: F401  (registers "forecaster")
from attnlab.models import icl_regressor as _icl_regressor  # noqa: F401  (registers "icl_regressor")
from attnlab.models import forecasting as _forecasting  # noqa: F401  (registers vanilla, patchtst, itransformer, timexer, gateformer)
from attnlab.models import lm as _lm  # noqa: F401  (registers "lm")
from attnlab.models import vision as _vision  # noqa: F401  (registers "vit")
from attnlab.models.lm import LanguageModel
from attnlab.models.registry import MODELS, register_model
from attnlab.models.transformer import (MLP_KINDS, Transformer, TransformerConfig, check_attn_keys,
                                        expand_layer_variants)


def _positive(model_cfg, key: str) -> int:
  """model_cfg[key] as an int >= 1, else a one-line ValueError."""
  value = model_cfg.get(key)
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"config.model.{key} must be an integer >= 1, got {value!r}")
  return value


def _layer_overrides(model_cfg, num_layers: int) -> tuple[tuple[tuple[str, Any], ...], ...]:
  """config.model.layers ({"<index>": {hyperparameter: value}}) -> one tuple of pairs per layer."""
  layers = model_cfg.get("layers", None) or {}
  out: list[dict[str, Any]] = [{} for _ in range(num_layers)]
  for key, overrides in dict(layers).items():
    if not str(key).isdigit() or int(key) >= num_layers:
      raise ValueError(f"config.model.layers keys are layer indices 0..{num_layers - 1}, got {key!r}")
    out[int(key)] = dict(overrides)
  return tuple(tuple(sorted(d.items())) for d in out)


def _check_dtype(name) -> None:
  """One-line ValueError unless `name` is a floating dtype name ("float32", "bfloat16", ...);
  numpy parses some strings as structured dtypes, so "(1,2" would raise a SyntaxError."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  try:
    dtype = jnp.dtype(name)
  except (TypeError, ValueError, SyntaxError):
    dtype = None
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"config.model.dtype must be a floating dtype (float32, bfloat16, float16), got {name!r}")


def transformer_config(model_cfg) -> TransformerConfig:
  """TransformerConfig from the `config.model` ConfigDict (validated, one-line errors).

  Keys: variant ("mha" or "a,b,..." per layer), num_layers, d_model, num_heads, mlp,
  mlp_dim, short_conv, dropout, dtype, causal (default True), attn (variant
  hyperparameters for every layer that takes them) and layers (per-layer overrides,
  {"<layer index>": {hyperparameter: value}}).
  """
  num_layers = _positive(model_cfg, "num_layers")
  d_model, num_heads = _positive(model_cfg, "d_model"), _positive(model_cfg, "num_heads")
  attn_cfg = dict(model_cfg.get("attn", {}) or {})
  if d_model % num_heads and not attn_cfg.get("head_dim", 0):
    raise ValueError(f"config.model.d_model ({d_model}) is not divisible by "
                     f"config.model.num_heads ({num_heads}): the head dimension must be an integer")
  _check_dtype(model_cfg.get("dtype", "float32"))
  if int(model_cfg.get("mlp_dim", 0)) < 0:
    raise ValueError(f"config.model.mlp_dim must be >= 0 (0 = the default width), got {model_cfg.mlp_dim}")
  if int(model_cfg.get("short_conv", 0)) < 0:
    raise ValueError(f"config.model.short_conv must be >= 0 (0 = none), got {model_cfg.short_conv}")
  if model_cfg.mlp not in MLP_KINDS:
    raise ValueError(f"config.model.mlp must be one of {', '.join(MLP_KINDS)}, got {model_cfg.mlp!r}")
  if not 0.0 <= float(model_cfg.get("dropout", 0.0)) < 1.0:
    raise ValueError(f"config.model.dropout must be in [0, 1), got {model_cfg.dropout}")
  cfg = TransformerConfig(
      d_model=d_model, num_layers=num_layers, num_heads=num_heads,
      layer_variants=expand_layer_variants(model_cfg.variant, num_layers),
      attn=tuple(sorted(attn_cfg.items())), layer_attn=_layer_overrides(model_cfg, num_layers),
      mlp=model_cfg.mlp, mlp_dim=int(model_cfg.get("mlp_dim", 0)),
      short_conv=int(model_cfg.get("short_conv", 0)), dropout=float(model_cfg.get("dropout", 0.0)),
      causal=bool(model_cfg.get("causal", True)), dtype=model_cfg.get("dtype", "float32"))
  if cfg.short_conv and not cfg.causal:
    raise ValueError("config.model.short_conv is a causal convolution; it needs model.causal=True")
  check_attn_keys(cfg)
  return cfg


def build_model(model_cfg, name: str = "lm", **model_kwargs):
  """The model `name` (a MODELS key) for `config.model` and the task's `model_kwargs()`."""
  return MODELS.get(name)(transformer_config(model_cfg), model_cfg, **model_kwargs)


def build_task_model(model_cfg, task):
  """The model `task` declares (`task.model`, `task.model_kwargs()`) for `config.model`."""
  return build_model(model_cfg, task.model, **task.model_kwargs())


__all__ = ["MODELS", "LanguageModel", "Transformer", "TransformerConfig", "build_model",
           "build_task_model", "register_model", "transformer_config"]
