"""vision task through the TFDS path (dataset=mnist: `tfds.data_source` + the grain pipeline) on
`tfds.testing.mock_data` (random 28x28x1 uint8 images, labels in 0..9; no download): the
spec, the reader's scaling, and a few training steps of mha / neighborhood / shifted_window
with a finite loss."""

import numpy as np
import pytest

from attnlab.config_loading import load_config
from attnlab.data import images as im
from attnlab.tasks import build_task
from attnlab.train import trainer

tfds = pytest.importorskip("tensorflow_datasets")

MOCK_EXAMPLES = 48


def _config(variant):
  config = load_config(f"configs/vision.py:dataset=mnist,smoke=True,variant={variant}", [])
  config.train.steps = 2
  config.train.warmup_steps = 1
  config.train.eval_every = 2
  config.train.checkpoint_every = 2
  return config


def test_tfds_source_and_spec_on_mock_data():
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    src = im.TfdsSource("mnist", "train")
    image, label = src.get(3)
    raw = tfds.data_source("mnist", split="train")[3]
    task = build_task(_config("mha"))
    task.validate()
    spec = task.input_spec()
  assert len(src) == MOCK_EXAMPLES and src.num_classes == 10 and src.image_shape == (28, 28, 1)
  np.testing.assert_array_equal(image, np.asarray(raw["image"], np.float32) / 255.0)
  assert label == int(raw["label"]) and 0.0 <= image.min() and image.max() <= 1.0
  assert spec["inputs"].shape == (8, 28, 28, 1) and task.model_kwargs()["num_classes"] == 10


@pytest.mark.parametrize("variant", ["mha", "neighborhood", "shifted_window"])
def test_train_steps_through_tfds(tmp_path, variant):
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    result = trainer.train(_config(variant), str(tmp_path))
  assert result["step"] == 2 and np.isfinite(result["eval/loss"]) and result["eval/examples"] > 0
