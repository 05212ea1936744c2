"""Helpers for `configs/<task>.py` files: the shared sections, the argument parser, smoke mode.

A config file's `get_config(arg)` takes a string such as
"variant=based,mha,smoke=True": comma-separated key=value pairs, where a piece without
`=` continues the previous value (so hybrids read naturally: variant=based,mha).
"""

from __future__ import annotations

import ast
from typing import Any

import ml_collections


def parse_arg(arg: str | None, allowed: dict[str, Any]) -> dict[str, Any]:
  """Parses "k=v,k2=v2" into a dict, typed like the defaults in `allowed` (unknown key -> ValueError)."""
  out = dict(allowed)
  if not arg:
    return out
  pairs: list[list[str]] = []
  for piece in arg.split(","):
    if "=" in piece:
      k, v = piece.split("=", 1)
      pairs.append([k.strip(), v.strip()])
    elif pairs:
      pairs[-1][1] += "," + piece.strip()
    else:
      raise ValueError(f"config argument {arg!r}: expected key=value pairs")
  for k, v in pairs:
    if k not in allowed:
      raise ValueError(f"unknown config argument {k!r}; expected one of: {', '.join(sorted(allowed))}")
    out[k] = _typed(k, v, allowed[k])
  return out


def check_choice(a: dict[str, Any], key: str, choices) -> None:
  """Raises a one-line ValueError unless the parsed argument `a[key]` is one of `choices`."""
  if a[key] not in choices:
    raise ValueError(f"{key} must be one of {', '.join(map(str, choices))}, got {a[key]!r}")


def _typed(key: str, text: str, default: Any) -> Any:
  """`text` as the type of `default` (bool, int, float; else the string); one-line ValueError."""
  if isinstance(default, bool):
    if text.lower() in ("1", "true", "yes"):
      return True
    if text.lower() in ("0", "false", "no"):
      return False
    raise ValueError(f"config argument {key}: expected a boolean, got {text!r}")
  if isinstance(default, (int, float)):
    try:
      return type(default)(ast.literal_eval(text))
    except (ValueError, SyntaxError, TypeError):
      raise ValueError(f"config argument {key}: expected {type(default).__name__}, got {text!r}") from None
  return text


def base_config() -> ml_collections.ConfigDict:
  """The sections every task shares: seed, model, task, train, mesh."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(dict(
      variant="mha", num_layers=2, d_model=128, num_heads=4, mlp="swiglu", mlp_dim=0,
      short_conv=0, dropout=0.0, dtype="float32", causal=True, position_embedding="none",
      attn=ml_collections.ConfigDict(), layers=ml_collections.ConfigDict()))
  c.task = ml_collections.ConfigDict()
  c.train = ml_collections.ConfigDict(dict(
      steps=1000, batch_size=32, learning_rate=1e-3, warmup_steps=100, weight_decay=0.1,
      grad_clip=1.0, eval_every=200, eval_batches=4, checkpoint_every=200, keep_checkpoints=2,
      log_every=50,
      # Weights of the auxiliary losses variants sow (MoH's load balance: beta = 0.01, Jin et al. 2024).
      aux_loss_weights=ml_collections.ConfigDict({"load_balance": 0.01})))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  return c


def apply_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config to seconds: tiny model, few steps (for tests and quick checks)."""
  c.model.num_layers = 2 if c.model.num_layers >= 2 else c.model.num_layers
  c.model.d_model = 32
  c.model.num_heads = 2
  c.train.steps = 6
  c.train.batch_size = 8
  c.train.warmup_steps = 2
  c.train.eval_every = 3
  c.train.eval_batches = 1
  c.train.checkpoint_every = 3
  c.train.log_every = 1
  return c


# Model shapes some variants need (applied by `apply_variant_needs` for single-variant runs):
# mega is single-headed by design (Ma et al., 2023); moh routes top-k among the non-shared
# heads, so it needs more heads than the 2 of the small task configs.
VARIANT_NEEDS = {"mega": {"num_heads": 1}, "moh": {"num_heads": 4}, "shvit": {"num_heads": 1}}


def apply_variant_needs(c: ml_collections.ConfigDict) -> None:
  """Sets config.model leaves that the chosen variant requires (see VARIANT_NEEDS)."""
  for k, v in VARIANT_NEEDS.get(c.model.variant, {}).items():
    c.model[k] = v


# Variants that refuse the classifier's key-padding mask (they then attend to the padding
# embedding; pooling still ignores padding).
NO_KEY_PADDING = ("nystromformer", "lsh")


def apply_encoder_variant(c: ml_collections.ConfigDict, seq_len: int) -> None:
  """Sets the length-dependent config.model.attn leaves of the LRA variants for a non-causal
  classifier over `seq_len` tokens, and model.key_padding=False for NO_KEY_PADDING variants.

  Every variant uses only the model's absolute position embedding (`positional="none"` where
  a variant has its own, LRA's protocol). A hybrid (variant=a,b) gets no attn leaves: set
  them per layer with config.model.layers.
  """
  block = max(8, min(64, seq_len // 16))
  attn = {
      "mha": {"positional": "none"},
      "linformer": {"max_len": seq_len, "k_proj": min(64, seq_len // 2)},
      "nystromformer": {"num_landmarks": min(32, seq_len // 8)},
      "bigbird": {"positional": "none", "block_size": block, "window_blocks": 2,
                  "num_global_blocks": 1, "num_random_blocks": 2},
      "longformer": {"positional": "none", "window": block + 1, "num_global": 1,
                     "block_size": block},
      "lsh": {"chunk_size": 2 * block, "num_buckets": max(2, seq_len // (2 * block))},
  }.get(c.model.variant, {})
  for k, v in attn.items():
    c.model.attn[k] = v
  if any(v.strip() in NO_KEY_PADDING for v in c.model.variant.split(",")):
    c.model.key_padding = False


def apply_encoder_classifier(c: ml_collections.ConfigDict, variant: str) -> None:
  """The small non-causal encoder classifier of the LRA-style configs (listops, text
  classification): `variant`, mean pooling over non-padding tokens, the key-padding mask,
  absolute sin-cos positions, 2 layers of width 64 with 4 heads."""
  m = c.model
  m.variant = variant
  m.causal = False
  m.pooling = "mean"
  m.key_padding = True
  m.position_embedding = "sincos"
  m.num_layers, m.d_model, m.num_heads = 2, 64, 4


def apply_lra_size(c: ml_collections.ConfigDict, *, seq_len: int, num_layers: int, d_model: int,
                   num_heads: int, mlp_dim: int, steps: int, warmup_steps: int, eval_every: int) -> None:
  """An LRA protocol's model and schedule (Tay et al., 2021): GELU MLPs, and LRA's learning
  rate 0.05 * rsqrt(warmup) at its peak (linear warmup, then the trainer's decay)."""
  c.task.seq_len = seq_len
  m = c.model
  m.num_layers, m.d_model, m.num_heads = num_layers, d_model, num_heads
  m.mlp = "gelu"
  m.mlp_dim = mlp_dim
  c.train.steps = steps
  c.train.learning_rate = 0.05 / warmup_steps ** 0.5  # LRA: 0.05 * warmup * rsqrt_decay, peak at warmup
  c.train.warmup_steps = warmup_steps
  c.train.eval_every = eval_every
  c.train.checkpoint_every = eval_every
