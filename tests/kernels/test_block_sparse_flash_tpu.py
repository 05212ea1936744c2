"""The TPU (Mosaic, scalar-prefetch) block-sparse flash kernels under
`pltpu.force_tpu_interpret_mode()` against the same dense oracle and cases as
test_block_sparse_flash.py (tolerances there: fp32, forward 1e-5, gradients 5e-5)."""

import pytest

from tests.kernels.test_block_sparse_flash import _check_case


@pytest.mark.parametrize("name", ["window_segments_gqa4", "selected_keypad_gqa2"])
def test_tpu_kernels_match_the_dense_oracle(name):
  _check_case(name, backend="tpu")
