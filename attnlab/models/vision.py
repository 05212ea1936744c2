"""The `vit` model: images -> (optional conv stem) -> patch embedding -> Transformer -> class logits.

images float32 [B, H, W, C] -> logits float32 [B, num_classes]. Pieces:

- conv stem (model.stem = n >= 0 layers; CCT's tokenizer, Hassani et al., 2021): n times a
  3x3 convolution of model.stem_width channels (0 = d_model) and a ReLU, then, with
  model.stem_pool, a 3x3 max-pool of stride 2 (SAME padding);
- patch embedding: a p x p convolution of stride p (model.patch_size; p must divide the
  stem's output size), giving a gh x gw grid of d_model tokens in row-major order;
- 2-D positions (model.position_embedding): "learned" (a [gh, gw, d] table), "sincos" (the
  2-D sin-cos table of MAE, He et al., 2022: the first d/2 channels encode the row, the last
  d/2 the column, each a 1-D Vaswani table) or "none";
- pooling (model.pooling): "mean" over the patch tokens, or "cls" (a learned class token
  prepended; its final state is pooled);
- the non-causal `Transformer` backbone, then a Dense head.

Variants that attend over the 2-D patch grid (those with a `grid` hyperparameter:
neighborhood, window, shifted_window, ...) are given grid=(gh, gw) by the builder; they
need pooling="mean", as a class token is not on the grid.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from attnlab.attention import VARIANTS
from attnlab.models.adapters import sincos_embedding
from attnlab.models.heads import POOLINGS, ClassHead
from attnlab.models.layers import partitioned
from attnlab.models.registry import register_model
from attnlab.models.transformer import Transformer, TransformerConfig

POSITIONS_2D = ("learned", "sincos", "none")


def sincos_2d(gh: int, gw: int, dim: int) -> jnp.ndarray:
  """float32 [gh, gw, dim]: channels [0, dim/2) a 1-D sin-cos table of the row, [dim/2, dim) of the column."""
  if dim % 2:
    raise ValueError(f"2-D sincos positions need an even d_model, got {dim}")
  half = dim // 2
  rows = jnp.broadcast_to(sincos_embedding(gh, half)[:, None, :], (gh, gw, half))
  cols = jnp.broadcast_to(sincos_embedding(gw, half)[None, :, :], (gh, gw, half))
  return jnp.concatenate([rows, cols], axis=-1)


# A bound on model.stem, far above CCT's 1-2 layers: a mistyped count (10**12) would otherwise
# spend the setup building conv layers one by one.
MAX_STEM_LAYERS = 64


def stem_output_size(size: int, stem_pool: bool) -> int:
  """Spatial size after the stem: unchanged by the SAME 3x3 convolutions, ceil(size/2) after the pool."""
  return -(-size // 2) if stem_pool else size


def patch_grid(image_shape, patch_size: int, stem_pool: bool = False) -> tuple[int, int]:
  """(gh, gw) of the patch grid; one-line ValueError if patch_size does not divide the stem's output."""
  h, w = (stem_output_size(s, stem_pool) for s in image_shape[:2])
  if patch_size < 1 or h % patch_size or w % patch_size:
    raise ValueError(f"model.patch_size={patch_size} must divide the (stem's) image size {h}x{w}")
  return h // patch_size, w // patch_size


class VisionTransformer(nn.Module):
  """images float32 [B, H, W, C] -> logits float32 [B, num_classes] (see the module docstring)."""
  cfg: TransformerConfig
  num_classes: int
  patch_size: int = 2
  pooling: str = "mean"
  position_embedding: str = "learned"
  stem: int = 0
  stem_width: int = 0
  stem_pool: bool = False

  @nn.compact
  def __call__(self, images, *, deterministic=True):
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    x = images.astype(dtype)
    for i in range(self.stem):
      x = nn.Conv(self.stem_width or cfg.d_model, (3, 3), padding="SAME", dtype=dtype,
                  kernel_init=partitioned(nn.initializers.lecun_normal(), (None, None, None, None)),
                  bias_init=partitioned(nn.initializers.zeros, (None,)), name=f"stem_{i}")(x)
      x = nn.relu(x)
    if self.stem_pool:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    p = self.patch_size
    x = nn.Conv(cfg.d_model, (p, p), strides=(p, p), padding="VALID", dtype=dtype,
                kernel_init=partitioned(nn.initializers.lecun_normal(), (None, None, None, "embed")),
                bias_init=partitioned(nn.initializers.zeros, ("embed",)), name="patch_embed")(x)
    b, gh, gw, d = x.shape
    if self.position_embedding == "learned":
      x = x + self.param("pos_embed", partitioned(nn.initializers.normal(0.02), (None, None, "embed")),
                         (gh, gw, d)).astype(dtype)
    elif self.position_embedding == "sincos":
      x = x + sincos_2d(gh, gw, d).astype(dtype)
    x = x.reshape(b, gh * gw, d)
    if self.pooling == "cls":
      cls = self.param("cls", partitioned(nn.initializers.normal(0.02), (None, None, "embed")), (1, 1, d))
      x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(dtype), x], axis=1)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    x = Transformer(cfg, name="backbone")(x, deterministic=deterministic)
    pooled = x[:, 0] if self.pooling == "cls" else jnp.mean(x, axis=1)
    return ClassHead(self.num_classes, cfg.dtype, name="head")(pooled)


def takes(variant: str, hyperparameter: str) -> bool:
  """Whether the registered variant has the hyperparameter."""
  return hyperparameter in {f.name for f in dataclasses.fields(VARIANTS.get(variant).config)}


def takes_grid(variant: str) -> bool:
  """Whether the registered variant has a `grid` hyperparameter (it attends over the 2-D patch grid)."""
  return takes(variant, "grid")


@register_model("vit")
def build_vit(backbone: TransformerConfig, model_cfg, *, num_classes: int,
              image_shape: tuple[int, int, int]) -> VisionTransformer:
  """A vision transformer for images of `image_shape` (H, W, C); reads model.patch_size (2),
  pooling ("mean"), position_embedding ("learned"), stem (0), stem_width (0 = d_model),
  stem_pool (False). 2-D variants get attn grid=(gh, gw); variants with a max_len (linformer's
  projection length, cosformer's M) get the token count unless model.attn.max_len is set."""
  pooling = str(model_cfg.get("pooling", "mean"))
  if pooling not in POOLINGS:
    raise ValueError(f"model.pooling must be one of {POOLINGS}, got {pooling!r}")
  position = str(model_cfg.get("position_embedding", "learned"))
  if position not in POSITIONS_2D:
    raise ValueError(f"vit: model.position_embedding must be one of {POSITIONS_2D}, got {position!r}")
  if num_classes < 2:
    raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
  if backbone.causal:
    raise ValueError("vit: set config.model.causal=False (an image encoder is not causal)")
  patch, stem_pool = int(model_cfg.get("patch_size", 2)), bool(model_cfg.get("stem_pool", False))
  stem = int(model_cfg.get("stem", 0))
  if not 0 <= stem <= MAX_STEM_LAYERS:
    raise ValueError(f"model.stem (number of 3x3 conv layers) must be in [0, {MAX_STEM_LAYERS}], got {stem}")
  grid = patch_grid(image_shape, patch, stem_pool)
  tokens = grid[0] * grid[1] + (pooling == "cls")
  if any(takes(v, "max_len") for v in backbone.layer_variants) and "max_len" not in dict(backbone.attn):
    backbone = dataclasses.replace(backbone, attn=tuple(sorted({**dict(backbone.attn), "max_len": tokens}.items())))
  gridded = sorted({v for v in backbone.layer_variants if takes_grid(v)})
  if gridded:
    if pooling == "cls":
      raise ValueError(f"vit: variant {', '.join(gridded)} attends over the 2-D patch grid; "
                       "use model.pooling=mean (a class token is not on the grid)")
    attn = dict(backbone.attn)
    attn.setdefault("grid", grid)
    backbone = dataclasses.replace(backbone, attn=tuple(sorted(attn.items())))
  return VisionTransformer(backbone, num_classes, patch, pooling, position, stem,
                           int(model_cfg.get("stem_width", 0)), stem_pool)


from attnlab.models import crossvit as _crossvit  # noqa: E402,F401  (registers "crossvit"; it imports this module)
