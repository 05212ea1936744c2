"""A whole model's decode state: the sum over its layers of each variant's state
(`attnlab.attention.state_size`) plus the backbone's short convolutions. Zoology and Based
plot recall against this number ("recurrent state size")."""

from __future__ import annotations

from attnlab.attention import registry
from attnlab.attention.state_size import short_conv_state


def model_state_floats(model_cfg, seq_len: int) -> int | None:
  """Floats the backbone of `config.model` carries per sequence between decode steps at
  length `seq_len` (a KV cache counts seq_len tokens), or None when a layer's variant
  declares no formula."""
  from attnlab.models import transformer_config
  cfg = transformer_config(model_cfg)
  total = 0
  for layer, variant in enumerate(cfg.layer_variants):
    hp = cfg.layer_hparams(layer)
    size = registry.state_size(variant, cfg.d_model, **hp)
    if size is None:
      return None
    total += size.at(seq_len) + short_conv_state(cfg.short_conv, cfg.d_model).fixed
  return total
