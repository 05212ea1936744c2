"""The `icl_regressor` model: in-context regression prompts -> the prediction at the query token.

Inputs {"tokens" float [B, T, F], "valid" bool [B, T]} (the layout of
`attnlab.data.icl_regression.prompt`: context tokens, padding, the query last). Each token
is mapped linearly to d_model (`SeriesEmbedding`, no position embedding by default: a
prompt is a set of pairs, and positions would tie the model to the trained length), the
non-causal backbone attends with the padding keys masked (`masks.KeyPadding`), and a
linear readout of the last (query) token's state gives the scalar prediction.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from attnlab.attention import masks
from attnlab.models.adapters import SeriesEmbedding
from attnlab.models.heads import ClassHead
from attnlab.models.registry import register_model
from attnlab.models.transformer import Transformer, TransformerConfig


class InContextRegressor(nn.Module):
  """{"tokens" [B, T, F], "valid" [B, T]} -> predictions float32 [B] (read at token T - 1)."""
  cfg: TransformerConfig
  position_embedding: str = "none"

  @nn.compact
  def __call__(self, inputs, *, deterministic=True):
    x = SeriesEmbedding(self.cfg.d_model, self.cfg.dtype, self.position_embedding,
                        name="embedding")(inputs["tokens"].astype(jnp.float32))
    x = Transformer(self.cfg, name="backbone")(x, mask=masks.KeyPadding(inputs["valid"]),
                                               deterministic=deterministic)
    return ClassHead(1, self.cfg.dtype, name="head")(x[:, -1])[:, 0]


@register_model("icl_regressor")
def build_icl_regressor(backbone: TransformerConfig, model_cfg) -> InContextRegressor:
  """The query-readout regressor; needs model.causal=False (the query sees every pair);
  reads model.position_embedding ("none" by default)."""
  if backbone.causal:
    raise ValueError("model 'icl_regressor' reads the query at the last token of a padded "
                     "prompt: it needs model.causal=False")
  return InContextRegressor(backbone, str(model_cfg.get("position_embedding", "none")))
