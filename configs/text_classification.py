"""Text classification from a `label,text` CSV with byte tokens and any non-causal variant.

The CSV format (header row naming `label` and `text` columns, or header=False for
plain label,text rows) is documented in attnlab/data/text_classification.py. Run:
  attnlab train --config configs/text_classification.py:train_path=data/train.csv \
      --workdir runs/tc_mha
  attnlab train --config configs/text_classification.py:train_path=data/train.csv,test_path=data/test.csv,variant=performer \
      --workdir runs/tc_performer
  attnlab eval --config configs/text_classification.py:train_path=data/train.csv,test_path=data/test.csv \
      --workdir runs/tc_mha --config.task.split=test
Smoke (any small CSV with two labels):
  attnlab train --config configs/text_classification.py:train_path=my.csv,smoke=True --workdir /tmp/tc
LRA's byte-level IMDb setting (Tay et al., 2021: 4 layers of width 256, inputs of up to
4K bytes, 20000 steps; an accelerator job): size=lra.
Single leaves: --config.task.seq_len=2048 --config.task.val_fraction=0.2 --config.train.steps=3000

Position embedding, variant hyperparameters and padding as in configs/listops.py
(`config_lib.apply_encoder_variant`); pooling is the mean over non-padding bytes.
"""

from attnlab import config_lib

ARGS = dict(variant="mha", size="default", smoke=False, train_path="", val_path="",
            test_path="", header=True)


def get_config(arg=None):
  a = config_lib.parse_arg(arg, ARGS)
  config_lib.check_choice(a, "size", ("default", "lra"))
  c = config_lib.base_config()
  c.task.name = "text_classification"
  c.task.train_path = a["train_path"]
  c.task.val_path = a["val_path"]
  c.task.test_path = a["test_path"]
  c.task.header = a["header"]
  c.task.label_column = "label"
  c.task.text_column = "text"
  c.task.val_fraction = 0.1
  c.task.seq_len = 512
  c.task.split = "val"
  c.task.data_seed = 0
  config_lib.apply_encoder_classifier(c, a["variant"])
  c.train.steps = 1000
  c.train.batch_size = 32
  c.train.learning_rate = 1e-3
  c.train.warmup_steps = 100
  c.train.eval_every = 200
  c.train.log_every = 25
  c.train.checkpoint_every = 200
  if a["size"] == "lra":
    config_lib.apply_lra_size(c, seq_len=4096, num_layers=4, d_model=256, num_heads=4, mlp_dim=1024,
                              steps=20000, warmup_steps=8000, eval_every=1000)
  if a["smoke"]:
    config_lib.apply_smoke(c)
    c.task.seq_len = 64
    c.train.batch_size = 4
  config_lib.apply_encoder_variant(c, c.task.seq_len)
  config_lib.apply_variant_needs(c)
  return c
