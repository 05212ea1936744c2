"""The `classifier` model: token encoder (usually non-causal) with mean or class-token pooling.

Token id 0 is padding: pooling ignores it and, with model.key_padding (default True),
attention layers get a `masks.KeyPadding` so no query attends to padding. Variants that
cannot take an extra mask refuse it with a one-line error; set model.key_padding=False
to let them attend to the (learned) padding embedding instead.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from attnlab.attention import masks
from attnlab.models.adapters import TokenEmbedding
from attnlab.models.heads import POOLINGS, ClassHead, masked_mean
from attnlab.models.layers import partitioned
from attnlab.models.registry import register_model
from attnlab.models.transformer import Transformer, TransformerConfig

PAD_ID = 0


class SequenceClassifier(nn.Module):
  """tokens int [B, T] (0 = padding) -> logits float32 [B, num_classes]."""
  cfg: TransformerConfig
  vocab_size: int
  num_classes: int
  pooling: str = "mean"
  key_padding: bool = True
  position_embedding: str = "learned"

  @nn.compact
  def __call__(self, tokens, *, deterministic=True):
    valid = tokens != PAD_ID
    x = TokenEmbedding(self.vocab_size, self.cfg.d_model, self.cfg.dtype, self.position_embedding,
                       name="embedding")(tokens)
    if self.pooling == "cls":
      cls = self.param("cls", partitioned(nn.initializers.normal(0.02), (None, None, "embed")),
                       (1, 1, self.cfg.d_model))
      x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, x.shape[2])).astype(x.dtype), x], 1)
      valid = jnp.concatenate([jnp.ones_like(valid[:, :1]), valid], axis=1)
    mask = masks.KeyPadding(valid) if self.key_padding else None
    x = Transformer(self.cfg, name="backbone")(x, mask=mask, deterministic=deterministic)
    pooled = x[:, 0] if self.pooling == "cls" else masked_mean(x, valid)
    return ClassHead(self.num_classes, self.cfg.dtype, name="head")(pooled)


@register_model("classifier")
def build_classifier(backbone: TransformerConfig, model_cfg, *, vocab_size: int,
                     num_classes: int) -> SequenceClassifier:
  """A sequence classifier; reads model.pooling ("mean" | "cls"), model.key_padding and
  model.position_embedding ("learned" by default)."""
  pooling = str(model_cfg.get("pooling", "mean"))
  if pooling not in POOLINGS:
    raise ValueError(f"model.pooling must be one of {POOLINGS}, got {pooling!r}")
  if num_classes < 2:
    raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
  return SequenceClassifier(backbone, vocab_size, num_classes, pooling,
                            bool(model_cfg.get("key_padding", True)),
                            str(model_cfg.get("position_embedding", "learned")))
