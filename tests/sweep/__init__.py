"""Tests of attnlab.sweep beyond tests/test_sweep.py: seeds and summaries, failures, kills, Ray."""
