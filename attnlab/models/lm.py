"""The `lm` model: token embedding -> causal Transformer backbone -> vocabulary logits."""

from __future__ import annotations

import flax.linen as nn

from attnlab.models.adapters import TokenEmbedding
from attnlab.models.heads import VocabHead
from attnlab.models.registry import register_model
from attnlab.models.transformer import Transformer, TransformerConfig


class LanguageModel(nn.Module):
  """tokens int [B, T] -> logits float32 [B, T, vocab_size]."""
  cfg: TransformerConfig
  vocab_size: int
  position_embedding: str = "none"

  @nn.compact
  def __call__(self, tokens, *, mask=None, positions=None, decode=False, deterministic=True):
    x = TokenEmbedding(self.vocab_size, self.cfg.d_model, self.cfg.dtype, self.position_embedding,
                       name="embedding")(tokens)
    x = Transformer(self.cfg, name="backbone")(x, mask=mask, positions=positions, decode=decode,
                                               deterministic=deterministic)
    return VocabHead(self.vocab_size, self.cfg.dtype, name="head")(x)


@register_model("lm")
def build_lm(backbone: TransformerConfig, model_cfg, *, vocab_size: int) -> LanguageModel:
  """The causal language model over `vocab_size` tokens (model.causal must be True)."""
  if not backbone.causal:
    raise ValueError("model 'lm' predicts the next token: it needs model.causal=True")
  return LanguageModel(backbone, vocab_size, str(model_cfg.get("position_embedding", "none")))
