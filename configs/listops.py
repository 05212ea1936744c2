"""LRA ListOps (Tay et al., 2021) with any non-causal attention variant: a 10-way classifier.

Run (the CPU budget of experiments/listops/table.md: expressions of 65-255 tokens (LRA's
rules at a quarter of its lengths) in a 256-token input, 2 layers of width 64, batch 32,
250 steps; about 5 minutes on a shared CPU core):
  attnlab train --config configs/listops.py:variant=mha --workdir runs/listops_mha
  attnlab eval --config configs/listops.py:variant=mha --workdir runs/listops_mha \
      --config.task.split=test
The LRA variants (LRA's table: mha, linformer, nystromformer, performer, bigbird,
longformer, linear, lsh) and a smoke run:
  attnlab train --config configs/listops.py:variant=nystromformer --workdir runs/listops_nys
  attnlab train --config configs/listops.py:smoke=True --workdir /tmp/lo_smoke
LRA's protocol (lengths 500-2000 in a 2048 input, 6 layers of width 512, 5000 steps;
an accelerator job):
  attnlab train --config configs/listops.py:variant=mha,size=lra --workdir runs/listops_lra
Single leaves: --config.task.max_depth=6 --config.train.steps=3000 --config.model.attn.k_proj=128

Every variant gets the same absolute sinusoidal position embedding (LRA's protocol) and
no positional scheme of its own (`positional="none"` where a variant has one). Pooling
is the mean over non-padding tokens (LRA pools a CLS token; set
--config.model.pooling=cls, then the model sees seq_len + 1 tokens). nystromformer and lsh
cannot take the key-padding mask, so they attend to the padding embedding
(model.key_padding=False); pooling still ignores padding. See
`config_lib.apply_encoder_variant` for each variant's length-dependent hyperparameters.
"""

from attnlab import config_lib

ARGS = dict(variant="mha", size="default", smoke=False, seed=0)


def get_config(arg=None):
  a = config_lib.parse_arg(arg, ARGS)
  config_lib.check_choice(a, "size", ("default", "lra"))
  c = config_lib.base_config()
  c.seed = a["seed"]
  c.task.name = "listops"
  c.task.seq_len = 256
  c.task.max_depth = 10
  c.task.max_args = 10
  c.task.min_length = 64
  c.task.max_length = 256
  c.task.num_train_examples = 96_000
  c.task.num_val_examples = 256
  c.task.num_test_examples = 2000
  c.task.split = "val"
  c.task.data_seed = 0
  config_lib.apply_encoder_classifier(c, a["variant"])
  c.train.steps = 250
  c.train.batch_size = 32
  c.train.learning_rate = 2e-3
  c.train.warmup_steps = 25
  c.train.weight_decay = 0.1
  c.train.eval_every = 50
  c.train.log_every = 10
  c.train.checkpoint_every = 125
  if a["size"] == "lra":
    config_lib.apply_lra_size(c, seq_len=2048, num_layers=6, d_model=512, num_heads=8, mlp_dim=2048,
                              steps=5000, warmup_steps=1000, eval_every=500)
    c.task.min_length = 500
    c.task.max_length = 2000
    c.task.num_val_examples = 2000
  if a["smoke"]:
    config_lib.apply_smoke(c)
    c.task.seq_len = 64
    c.task.max_depth = 5
    c.task.max_args = 5
    c.task.min_length = 16
    c.task.max_length = 64
    c.task.num_train_examples = 0
    c.task.num_val_examples = 12
    c.task.num_test_examples = 12
  config_lib.apply_encoder_variant(c, c.task.seq_len)
  config_lib.apply_variant_needs(c)
  return c
