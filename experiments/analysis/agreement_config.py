"""The agreement-style task of `agreement_data.py` on the small non-causal encoder
classifier of configs/text_classification.py (2 layers of width 64, 4 heads, mean pooling,
sin-cos positions: `config_lib.apply_encoder_classifier`) over 32 bytes, for Abnar &
Zuidema's check on an encoder (experiments/analysis/README.md, section 3b).

  python experiments/analysis/agreement_data.py /tmp/agree
  attnlab train --config experiments/analysis/agreement_config.py:variant=mha,data=/tmp/agree \
      --workdir /tmp/agree_mha
"""

import importlib.util
import os

from attnlab import config_lib

ARGS = dict(variant="mha", data="/tmp/agree")
OWN_POSITIONAL = ("moh",)  # variants with their own RoPE default that this check turns off
_BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs", "text_classification.py")


def get_config(arg=None):
  a = config_lib.parse_arg(arg, ARGS)
  spec = importlib.util.spec_from_file_location("text_classification_config", _BASE)
  base = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(base)
  c = base.get_config(f"variant={a['variant']},train_path={os.path.join(a['data'], 'train.csv')},"
                      f"val_path={os.path.join(a['data'], 'val.csv')}")
  c.task.seq_len = 32
  c.train.steps = 600
  c.train.learning_rate = 2e-3
  c.train.warmup_steps = 50
  c.train.weight_decay = 0.0
  c.train.log_every = 100
  c.train.checkpoint_every = 300
  config_lib.apply_encoder_variant(c, c.task.seq_len)  # the length-dependent leaves, for 32
  if a["variant"] in OWN_POSITIONAL:  # only the model's sin-cos positions, as mha's positional="none"
    c.model.attn.positional = "none"
  return c
