"""Sharded lookups on 2 and 4 gloo processes equal a single table on the same data: forward, backward, every
fused optimizer and a torch optimizer (Adagrad), padded and pooled, with padding_idx. One spawn runs every
configuration of a world size: starting the processes costs more than the checks."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # the workers must be importable by the spawned processes
import distributed_workers as w  # noqa: E402

POOLED = {2: [("adam", "sum"), (None, "mean"), ("sgd", "max")],
          4: [("adagrad", "max"), ("rowwise_adagrad", "mean"), ("adam", "sum")]}


# 4 processes take about twice as long as 2 (30 s on the shared machine): with the slow tests.
@pytest.mark.parametrize("world", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_padded_and_pooled_lookups_train_like_one_table(world):
    w.spawn(world, w.lookups, w.OPTIMIZERS, POOLED[world])
