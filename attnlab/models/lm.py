"""The `lm` model: token embedding -> causal Transformer backbone -> vocabulary logits."""

from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax.numpy as jnp

from attnlab.models.adapters import TokenEmbedding
from attnlab.models.heads import VocabHead
from attnlab.models.registry import register_model
from attnlab.models.transformer import Transformer, TransformerConfig


class LanguageModel(nn.Module):
  """tokens int [B, T] -> logits float32 [B, T, vocab_size].

  Or {"tokens" [B, T], "head_positions" int [B, P]} -> logits [B, P, vocab_size]: the vocabulary
  head only at the positions that carry a target (MQAR's P queries: with Zoology's 8,192-way
  vocabulary the head over all T positions is most of a step's work), the backbone unchanged."""
  cfg: TransformerConfig
  vocab_size: int
  position_embedding: str = "none"

  @nn.compact
  def __call__(self, tokens, *, mask=None, positions=None, decode=False, deterministic=True):
    head_positions = None
    if isinstance(tokens, Mapping):
      tokens, head_positions = tokens["tokens"], tokens["head_positions"]
    x = TokenEmbedding(self.vocab_size, self.cfg.d_model, self.cfg.dtype, self.position_embedding,
                       name="embedding")(tokens)
    x = Transformer(self.cfg, name="backbone")(x, mask=mask, positions=positions, decode=decode,
                                               deterministic=deterministic)
    if head_positions is not None:  # [B, T, d] -> [B, P, d]
      x = jnp.take_along_axis(x, head_positions[..., None].astype(jnp.int32), axis=1)
    return VocabHead(self.vocab_size, self.cfg.dtype, name="head")(x)


@register_model("lm")
def build_lm(backbone: TransformerConfig, model_cfg, *, vocab_size: int) -> LanguageModel:
  """The causal language model over `vocab_size` tokens (model.causal must be True)."""
  if not backbone.causal:
    raise ValueError("model 'lm' predicts the next token: it needs model.causal=True")
  return LanguageModel(backbone, vocab_size, str(model_cfg.get("position_embedding", "none")))
