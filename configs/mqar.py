"""Multi-query associative recall (Zoology, Arora et al. 2023) with any attention variant.

Run (the README's default job, about a minute on a laptop CPU):
  attnlab train --config configs/mqar.py --workdir runs/mqar
Another variant, a hybrid, or a smoke run:
  attnlab train --config configs/mqar.py:variant=sliding_window --workdir runs/mqar_swa
  attnlab train --config configs/mqar.py:variant=based,mha --workdir runs/mqar_hybrid
  attnlab train --config configs/mqar.py:smoke=True --workdir /tmp/smoke
Zoology-style sizes (seq 256, 16 key-value pairs, d_model 128):
  attnlab train --config configs/mqar.py:size=zoology --workdir runs/mqar_zoology
Single leaves: --config.model.d_model=64 --config.train.steps=2000 --config.model.attn.window=32
"""

from attnlab import config_lib

ARGS = dict(variant="mha", size="default", smoke=False)


def get_config(arg=None):
  a = config_lib.parse_arg(arg, ARGS)
  c = config_lib.base_config()
  c.task.name = "mqar"
  c.task.vocab_size = 64  # keys from [1, 32), values from [32, 64)
  c.task.seq_len = 64
  c.task.num_kv_pairs = 8
  c.task.power_a = 0.01
  c.task.random_non_queries = True
  c.task.num_train_examples = 0  # 0 = a fresh example every step
  c.model.variant = a["variant"]
  c.model.num_layers = 2
  c.model.d_model = 128
  c.model.num_heads = 2
  c.train.steps = 400
  c.train.batch_size = 64
  c.train.learning_rate = 3e-3
  c.train.warmup_steps = 50
  c.train.weight_decay = 0.0
  c.train.eval_every = 50
  c.train.log_every = 50
  c.train.checkpoint_every = 100
  if a["size"] == "zoology":
    c.task.vocab_size = 8192
    c.task.seq_len = 256
    c.task.num_kv_pairs = 16
    c.model.d_model = 128
    c.train.steps = 3000
  elif a["size"] != "default":
    raise ValueError(f"size must be 'default' or 'zoology', got {a['size']!r}")
  if a["smoke"]:
    config_lib.apply_smoke(c)
    c.task.seq_len = 32
    c.task.num_kv_pairs = 4
    c.task.vocab_size = 64
  config_lib.apply_variant_needs(c)
  return c
