"""Tests of kernels_pallas (interpret mode on CPU)."""
