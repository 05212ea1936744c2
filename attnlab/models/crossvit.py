"""The `crossvit` model (Chen, Fan & Panda, ICCV 2021, CrossViT): two patch sizes, two token
streams, class-token cross-attention fusion.

images float32 [B, H, W, C] -> logits float32 [B, num_classes]. The image (after the
optional shared conv stem of the `vit` model) is cut into patches of two sizes, giving two
branches: "small" (model.crossvit.small_patch, width small_dim) and "large" (large_patch,
width large_dim). Each branch is [CLS; patch tokens] with learned positions on the patches.
Then `blocks` multi-scale blocks, each:

  1. small_layers backbone `Block`s on the small branch, large_layers on the large branch
     (any non-grid attention variant of config.model.variant);
  2. cross-attention fusion (paper Sec. 3.3, eqs. 5-8; `CrossFusion`): for each branch i
     with the other branch j,
        c'   = f_i(cls_i)                           project CLS_i to width D_j
        x'   = [c'; patches_j]                      [B, 1 + N_j, D_j]
        y    = c' + MCA(LN(x'))                     only c' queries; keys / values are x'
        cls_i <- g_i(y)                             project back to width D_i
     with f, g = LayerNorm -> GELU -> Dense (as in the official code, IBM/CrossViT);
     the patch tokens of both branches are left unchanged.

Each branch ends with an RMSNorm; its CLS goes to its own Dense head and the two logits are
averaged (as in the paper). Departures: one fusion layer per block (the paper's L = 1 in all
models), RMSNorm pre-norm backbone blocks (the library's `Block`) instead of LayerNorm, the
shared conv stem of the `vit` recipe before both patch embeddings (off with model.stem=0),
no drop path.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnlab.models.heads import ClassHead
from attnlab.models.layers import RMSNorm, partitioned
from attnlab.models.registry import register_model
from attnlab.models.transformer import Block, TransformerConfig
from attnlab.models.vision import patch_grid, takes_grid

DEFAULTS = dict(small_patch=2, large_patch=4, small_dim=0, large_dim=0, blocks=2, small_layers=1,
                large_layers=1)


def _dense(features: int, name: str, dtype) -> nn.Dense:
  """A Dense layer with bias (replicated parameters)."""
  return nn.Dense(features, dtype=dtype, name=name,
                  kernel_init=partitioned(nn.initializers.lecun_normal(), (None, None)),
                  bias_init=partitioned(nn.initializers.zeros, (None,)))


class Projection(nn.Module):
  """x [..., D_in] -> [..., features]: LayerNorm -> GELU (exact) -> Dense (CrossViT's f and g)."""
  features: int
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x):
    h = nn.LayerNorm(epsilon=1e-6, dtype=jnp.dtype(self.dtype), name="norm")(x)
    return _dense(self.features, "dense", jnp.dtype(self.dtype))(jax.nn.gelu(h, approximate=False))


class ClsCrossAttention(nn.Module):
  """CrossViT's cross-attention block: cls [B, 1, D] (already in this width), tokens [B, N, D]
  -> cls + MCA(LN([cls; tokens])) [B, 1, D], where only the class token queries and the keys /
  values are all 1 + N tokens; num_heads heads of width D / num_heads, scale (D / h)^-0.5."""
  num_heads: int
  dtype: str = "float32"

  @nn.compact
  def __call__(self, cls, tokens):
    dtype = jnp.dtype(self.dtype)
    b, _, d = cls.shape
    h, dh = self.num_heads, d // self.num_heads
    x = nn.LayerNorm(epsilon=1e-6, dtype=dtype, name="norm")(jnp.concatenate([cls, tokens], axis=1))
    q = _dense(d, "query", dtype)(x[:, :1]).reshape(b, 1, h, dh)
    k = _dense(d, "key", dtype)(x).reshape(b, -1, h, dh)
    v = _dense(d, "value", dtype)(x).reshape(b, -1, h, dh)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * dh ** -0.5
    o = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1).astype(dtype), v)
    return cls + _dense(d, "out", dtype)(o.reshape(b, 1, d))


class CrossFusion(nn.Module):
  """(small [B, 1 + N_s, D_s], large [B, 1 + N_l, D_l]) -> the same with each CLS replaced by
  g_i(f_i(cls_i) + MCA(LN([f_i(cls_i); patches_j]))), j the other branch (module docstring)."""
  num_heads: int
  dtype: str = "float32"

  @nn.compact
  def __call__(self, small, large):
    xs = (small, large)
    out = []
    for i, name in enumerate(("small", "large")):
      own, other = xs[i], xs[1 - i]
      c = Projection(other.shape[-1], self.dtype, name=f"{name}_proj")(own[:, :1])
      c = ClsCrossAttention(self.num_heads, self.dtype, name=f"{name}_fuse")(c, other[:, 1:])
      c = Projection(own.shape[-1], self.dtype, name=f"{name}_revert")(c)
      out.append(jnp.concatenate([c, own[:, 1:]], axis=1))
    return tuple(out)


class CrossViT(nn.Module):
  """images float32 [B, H, W, C] -> logits float32 [B, num_classes] (see the module docstring).

  small / large: the branches' backbone configs (their d_model is the branch width and
  num_layers = blocks * layers per block); patches: (small_patch, large_patch)."""
  small: TransformerConfig
  large: TransformerConfig
  num_classes: int
  patches: tuple[int, int] = (2, 4)
  blocks: int = 2
  stem: int = 0
  stem_width: int = 0

  @nn.compact
  def __call__(self, images, *, deterministic=True):
    dtype = jnp.dtype(self.small.dtype)
    x = images.astype(dtype)
    for i in range(self.stem):
      x = nn.relu(nn.Conv(self.stem_width or self.small.d_model, (3, 3), padding="SAME", dtype=dtype,
                          kernel_init=partitioned(nn.initializers.lecun_normal(), (None,) * 4),
                          bias_init=partitioned(nn.initializers.zeros, (None,)), name=f"stem_{i}")(x))
    branches = []
    for name, cfg, p in (("small", self.small, self.patches[0]), ("large", self.large, self.patches[1])):
      t = nn.Conv(cfg.d_model, (p, p), strides=(p, p), padding="VALID", dtype=dtype,
                  kernel_init=partitioned(nn.initializers.lecun_normal(), (None, None, None, "embed")),
                  bias_init=partitioned(nn.initializers.zeros, ("embed",)), name=f"{name}_patch_embed")(x)
      b, gh, gw, d = t.shape
      t = t + self.param(f"{name}_pos_embed", partitioned(nn.initializers.normal(0.02), (None, None, "embed")),
                         (gh, gw, d)).astype(dtype)
      cls = self.param(f"{name}_cls", partitioned(nn.initializers.normal(0.02), (None, None, "embed")), (1, 1, d))
      branches.append(jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(dtype),
                                       t.reshape(b, gh * gw, d)], axis=1))
    per_block = [c.num_layers // self.blocks for c in (self.small, self.large)]
    for k in range(self.blocks):
      for i, (name, cfg) in enumerate((("small", self.small), ("large", self.large))):
        for j in range(k * per_block[i], (k + 1) * per_block[i]):
          branches[i] = Block(cfg, j, name=f"{name}_layer_{j}")(branches[i], deterministic=deterministic)
      branches = list(CrossFusion(self.small.num_heads, self.small.dtype, name=f"fusion_{k}")(*branches))
    logits = [ClassHead(self.num_classes, cfg.dtype, name=f"{name}_head")(RMSNorm(name=f"{name}_norm")(t[:, 0]))
              for name, cfg, t in (("small", self.small, branches[0]), ("large", self.large, branches[1]))]
    return (logits[0] + logits[1]) / 2


def crossvit_options(model_cfg) -> dict:
  """model.crossvit merged over DEFAULTS (unknown keys: a one-line ValueError)."""
  given = dict(model_cfg.get("crossvit", None) or {})
  unknown = sorted(set(given) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"model.crossvit has unknown keys {unknown}; known: {', '.join(DEFAULTS)}")
  return {**DEFAULTS, **given}


@register_model("crossvit")
def build_crossvit(backbone: TransformerConfig, model_cfg, *, num_classes: int,
                   image_shape: tuple[int, int, int]) -> CrossViT:
  """A CrossViT for images of `image_shape` (H, W, C). Reads model.crossvit {small_patch (2),
  large_patch (4), small_dim / large_dim (0 = d_model / 2 d_model, the paper's 1:2), blocks (2),
  small_layers / large_layers per block (1, 1)}, model.stem and model.stem_width; the branch
  blocks take backbone's variant, heads, MLP and attn hyperparameters. num_layers is not used."""
  o = crossvit_options(model_cfg)
  if num_classes < 2:
    raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
  if backbone.causal:
    raise ValueError("crossvit: set config.model.causal=False (an image encoder is not causal)")
  gridded = sorted({v for v in backbone.layer_variants if takes_grid(v)})
  if gridded or len(set(backbone.layer_variants)) != 1:
    raise ValueError(f"crossvit: the branches need one non-grid attention variant (their class tokens are "
                     f"not on a patch grid), got model.variant={','.join(backbone.layer_variants)!r}")
  if min(o["blocks"], o["small_layers"], o["large_layers"]) < 1:
    raise ValueError(f"crossvit: blocks, small_layers and large_layers must be >= 1, got {o}")
  for p in (o["small_patch"], o["large_patch"]):
    patch_grid(image_shape, int(p))  # one-line ValueError when p does not divide the image size
  dims = (int(o["small_dim"]) or backbone.d_model, int(o["large_dim"]) or 2 * backbone.d_model)
  if any(d % backbone.num_heads for d in dims):
    raise ValueError(f"crossvit: branch widths {dims} must be multiples of num_heads={backbone.num_heads}")

  def branch(d: int, per_block: int) -> TransformerConfig:
    n = o["blocks"] * per_block
    return dataclasses.replace(backbone, d_model=d, num_layers=n, layer_variants=backbone.layer_variants[:1] * n,
                               layer_attn=())

  stem = int(model_cfg.get("stem", 0))
  if stem < 0:
    raise ValueError(f"model.stem (number of 3x3 conv layers) must be >= 0, got {stem}")
  return CrossViT(branch(dims[0], int(o["small_layers"])), branch(dims[1], int(o["large_layers"])), num_classes,
                  (int(o["small_patch"]), int(o["large_patch"])), int(o["blocks"]), stem,
                  int(model_cfg.get("stem_width", 0)))
