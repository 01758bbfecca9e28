"""Layout calls of a sharded table take global ids and act on their owners; errors and budgets are agreed by
every rank (all raise, none changes); checkpoints reshard from 2 ranks onto 1 and 4."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # the workers must be importable by the spawned processes
import distributed_workers as w  # noqa: E402


# 4 processes take about twice as long as 2 (30 s on the shared machine): with the slow tests.
@pytest.mark.parametrize("world", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_layout_calls_act_like_one_table_and_errors_raise_on_every_rank(world):
    w.spawn(world, w.layout)


def test_checkpoint_of_2_ranks_loads_on_1_and_4(tmp_path):
    w.spawn(2, w.save_trained, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["manifest.json", "reference.pt", "shard-00000-of-00002.pt",
                                            "shard-00001-of-00002.pt"]
    w.spawn(4, w.load_saved, str(tmp_path))
