"""Multi-query associative recall (Zoology, Arora et al. 2023) with any attention variant.

Run (the README's default job, about a minute on a laptop CPU):
  attnlab train --config configs/mqar.py --workdir runs/mqar
Another variant, a hybrid, or a smoke run:
  attnlab train --config configs/mqar.py:variant=sliding_window --workdir runs/mqar_swa
  attnlab train --config configs/mqar.py:variant=based,mha --workdir runs/mqar_hybrid
  attnlab train --config configs/mqar.py:smoke=True --workdir /tmp/smoke
Zoology-style sizes (seq 256, 16 key-value pairs, d_model 128):
  attnlab train --config configs/mqar.py:size=zoology --workdir runs/mqar_zoology
The recall budget of the attention-zoo table (seq 256, 16 pairs, 300 steps; a CPU-sized
Zoology setup: no MLP, a short convolution before each attention layer):
  attnlab sweep --config configs/mqar.py:size=recall --workdir runs/recall \
      --axis arg.variant=mha,based,gla --axis model.d_model=64,256 --jobs 2
Single leaves: --config.model.d_model=64 --config.train.steps=2000 --config.model.attn.window=32
"""

from attnlab import config_lib

# Sweepable arguments (0 keeps the size's value), so `attnlab reproduce` and `attnlab sweep`
# can set them per point: d_model, lr, seq_len, pairs (num_kv_pairs; with size=zoology and
# seq_len set, 0 means Zoology's seq_len / 16), steps, layers, and stop (stop at this eval
# accuracy, Zoology's 0.99; 0 = train every step).
ARGS = dict(variant="mha", size="default", smoke=False, seed=0, d_model=0, lr=0.0, seq_len=0,
            pairs=0, steps=0, layers=0, stop=0.0)


def get_config(arg=None):
  a = config_lib.parse_arg(arg, ARGS)
  config_lib.check_choice(a, "size", ("default", "zoology", "recall"))
  c = config_lib.base_config()
  c.task.name = "mqar"
  c.task.vocab_size = 64  # keys from [1, 32), values from [32, 64)
  c.task.seq_len = 64
  c.task.num_kv_pairs = 8
  c.task.power_a = 0.01
  c.task.random_non_queries = True
  c.task.num_train_examples = 0  # 0 = a fresh example every step
  c.task.head_at_queries = False  # True: the vocabulary head only at the query positions
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
    c.task.head_at_queries = True  # the 8192-way head at 16 of 256 positions: 1/16 of its cost
    c.model.d_model = 128
    c.train.steps = 3000
  elif a["size"] == "recall":
    # Zoology's attention-only models (identity state mixer) with the short convolution of
    # H3/Based/BaseConv, which gives every variant the previous-token path recall needs. With
    # it, lr 1e-2 and vocab 64, mha at d_model 64 passes the plateau by step ~200 (lr 3e-3
    # or no convolution: still near chance at step 600).
    c.task.vocab_size = 64
    c.task.seq_len = 256
    c.task.num_kv_pairs = 16
    c.model.mlp = "none"
    c.model.short_conv = 4
    c.train.learning_rate = 1e-2
    c.train.steps = 300
    c.train.warmup_steps = 30
    c.train.eval_every = 100
    c.train.log_every = 50
  if a["smoke"]:
    config_lib.apply_smoke(c)
    c.task.seq_len = 32
    c.task.num_kv_pairs = 4
    c.task.vocab_size = 64
  c.seed = a["seed"]
  for arg, leaf in (("d_model", "model.d_model"), ("lr", "train.learning_rate"),
                    ("seq_len", "task.seq_len"), ("pairs", "task.num_kv_pairs"), ("steps", "train.steps"),
                    ("layers", "model.num_layers")):
    if a[arg]:
      section, key = leaf.split(".")
      c[section][key] = a[arg]
  if a["size"] == "zoology" and a["seq_len"] and not a["pairs"]:
    c.task.num_kv_pairs = a["seq_len"] // 16  # Zoology's (64, 4), (128, 8), (256, 16), ...
  c.train.stop_at = f"eval/accuracy>={a['stop']}" if a["stop"] else ""
  config_lib.apply_variant_needs(c)
  return c
