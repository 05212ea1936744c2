"""vit builder: variants with a max_len (linformer) get the token count of the patch grid, and an
explicit model.attn.max_len is kept (so a too-short one still raises)."""

import jax
import jax.numpy as jnp
import pytest

from attnlab.config_loading import load_config
from attnlab.models import build_model


def _init_shapes(overrides):
  config = load_config("configs/vision.py:dataset=pathfinder,variant=linformer,smoke=True", overrides)
  model = build_model(config.model, "vit", num_classes=2, image_shape=(32, 32, 1))
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 1)))


def test_linformer_gets_the_pixel_token_count():
  _init_shapes([])  # 1,024 tokens > linformer's default max_len of 512: builds


def test_explicit_max_len_is_kept():
  with pytest.raises(ValueError, match="exceeds max_len=512"):
    _init_shapes(["--config.model.attn.max_len=512"])
