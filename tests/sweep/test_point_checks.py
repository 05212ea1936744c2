"""A sweep point's config runs the same checks as `attnlab train` before anything compiles:
a missing required leaf and sizes no machine holds become the point's one-line error."""

from attnlab.sweep.point import check_point

SPEC = "configs/mqar.py:smoke=True"


def test_a_valid_point_passes():
  assert check_point(SPEC, []) is None  # the canary of the two below: the same spec, valid


def test_absurd_sizes_are_the_points_one_line_error_not_a_traceback():
  error = check_point(SPEC, ["--config.model.d_model=1000000000000"])
  assert error is not None and "too large to set up" in error and "\n" not in error, error


def test_a_missing_required_key_is_the_points_error(monkeypatch):
  import attnlab.config_loading as config_loading
  real = config_loading.load_config

  def without_num_heads(spec, overrides):
    config = real(spec, overrides)
    del config.model["num_heads"]
    return config

  monkeypatch.setattr(config_loading, "load_config", without_num_heads)
  error = check_point(SPEC, [])
  assert error is not None and "has no config.model.num_heads" in error, error
