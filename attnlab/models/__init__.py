"""Backbones and heads built from attention modules."""

from __future__ import annotations

from attnlab.models.transformer import (MLP_KINDS, LanguageModel, Transformer, TransformerConfig,
                                        check_attn_keys, expand_layer_variants)


def transformer_config(model_cfg, *, vocab_size: int, max_len: int = 0) -> TransformerConfig:
  """TransformerConfig from the `config.model` ConfigDict (validated, one-line errors).

  Keys: variant ("mha" or "a,b,..." per layer), num_layers, d_model, num_heads, mlp,
  mlp_dim, short_conv, dropout, dtype, attn (a dict of variant hyperparameters).
  """
  num_layers = int(model_cfg.num_layers)
  if model_cfg.d_model % model_cfg.num_heads and not model_cfg.attn.get("head_dim", 0):
    raise ValueError(f"model.d_model ({model_cfg.d_model}) is not divisible by "
                     f"model.num_heads ({model_cfg.num_heads})")
  if int(model_cfg.get("short_conv", 0)) < 0:
    raise ValueError(f"model.short_conv must be >= 0 (0 = none), got {model_cfg.short_conv}")
  if model_cfg.mlp not in MLP_KINDS:
    raise ValueError(f"model.mlp must be one of {', '.join(MLP_KINDS)}, got {model_cfg.mlp!r}")
  attn = tuple(sorted(dict(model_cfg.attn).items()))
  cfg = TransformerConfig(
      vocab_size=vocab_size, d_model=int(model_cfg.d_model), num_layers=num_layers,
      num_heads=int(model_cfg.num_heads),
      layer_variants=expand_layer_variants(model_cfg.variant, num_layers),
      attn=attn, mlp=model_cfg.mlp, mlp_dim=int(model_cfg.mlp_dim),
      short_conv=int(model_cfg.get("short_conv", 0)),
      dropout=float(model_cfg.dropout), dtype=model_cfg.dtype, max_len=max_len)
  check_attn_keys(cfg)
  return cfg


def build_model(model_cfg, *, vocab_size: int, max_len: int = 0) -> LanguageModel:
  """The language model described by `config.model` (see `transformer_config`)."""
  return LanguageModel(transformer_config(model_cfg, vocab_size=vocab_size, max_len=max_len))


__all__ = ["LanguageModel", "Transformer", "TransformerConfig", "build_model", "transformer_config"]
