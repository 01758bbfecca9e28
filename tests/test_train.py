"""The per-segment trainer: budget held and checked, bounded training, early stopping, exact resume."""
import numpy as np
import pytest
import torch

from pyscall.app import checkpoint
from pyscall.app.data.stream import prepare_stream
from pyscall.app.data.synthetic import synthetic_stream
from pyscall.app.scall.policies import make_policy
from pyscall.app.train import Budget, BudgetError, StreamTrainer, TrainConfig


@pytest.fixture(scope="module")
def stream():
    return prepare_stream(synthetic_stream(120, 80, 2400, seed=1), segmentation="count", n_segments=3, seed=1)


def _config(**kw):
    base = dict(model="mf", d_max=8, batch_size=128, max_batches=12, eval_every=4, patience=2, seed=3)
    return TrainConfig(**{**base, **kw})


def _comparable(rows):
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]  # times differ


def test_budget_arithmetic():
    assert Budget(megabytes=2).params(10, 10) == 500_000
    assert Budget(mean_size=4.5).params(10, 30) == 180
    assert Budget().params(10, 10) is None
    with pytest.raises(ValueError, match="not both"):
        Budget(megabytes=1, mean_size=2)
    with pytest.raises(ValueError, match="> 0"):
        Budget(mean_size=0)


def test_lr_schedule_decays_and_floors():
    cfg = TrainConfig()
    assert cfg.lr_at(0) == cfg.lr_at(199) == pytest.approx(0.03)
    assert cfg.lr_at(200) == pytest.approx(0.03 * 0.95)
    assert cfg.lr_at(10**6) == pytest.approx(1e-3)


def test_config_validation():
    with pytest.raises(ValueError, match="model"):
        TrainConfig(model="ncf")
    with pytest.raises(ValueError, match="max_batches"):
        TrainConfig(max_batches=0)


@pytest.mark.parametrize("policy", ["uniform", "freq-rule", "fixed-alpha", "random"])
@pytest.mark.parametrize("model", ["mf", "lightgcn"])
def test_every_segment_holds_the_budget(stream, policy, model):
    trainer = StreamTrainer(stream, make_policy(policy), _config(model=model), Budget(mean_size=3))
    rows = [trainer.run_segment() for _ in stream.segments]
    assert trainer.done
    for row, seg in zip(rows, stream.segments):
        assert row["params"] == row["budget_params"] == 3 * (seg.n_users + seg.n_items)
        assert 0 < row["bytes"] <= row["budget_bytes"]
        # weights with their Adam state (12 bytes a parameter) and each row's metadata (16 bytes) count
        assert row["budget_bytes"] == row["budget_params"] * 12 + (seg.n_users + seg.n_items) * 16
        assert row["eval_users"] == len(np.unique(seg.test[:, 0]))
        assert 0 <= row["recall@20"] <= 1 and 0 <= row["ndcg@20"] <= 1
        assert 1 <= row["batches"] <= 12
    users, items = trainer.widths()
    assert len(users) == stream.segments[-1].n_users and len(items) == stream.segments[-1].n_items
    assert int(users.sum()) + int(items.sum()) == rows[-1]["params"]


def test_eval_users_caps_the_evaluated_users(stream):
    row = StreamTrainer(stream, make_policy("uniform"), _config(eval_users=5), Budget(mean_size=3)).run_segment()
    assert row["eval_users"] == 5


def test_full_policy_ignores_the_budget(stream):
    trainer = StreamTrainer(stream, make_policy("full"), _config(), Budget(mean_size=3))
    row = trainer.run_segment()
    assert row["budget_params"] is None and row["budget_bytes"] is None
    assert row["params"] == 8 * (row["n_users"] + row["n_items"])


def test_budget_below_d_min_stops_with_a_clear_error(stream):
    trainer = StreamTrainer(stream, make_policy("uniform"), _config(d_min=2), Budget(mean_size=1.5))
    with pytest.raises(BudgetError, match="over the budget"):
        trainer.run_segment()


def test_training_ends_when_validation_never_moves(stream):
    # lr 0: the weights never change, so validation never improves after the first check
    cfg = _config(lr=0.0, lr_min=0.0, max_batches=1000, eval_every=3, patience=2)
    row = StreamTrainer(stream, make_policy("uniform"), cfg, Budget(mean_size=3)).run_segment()
    assert row["batches"] == 9 and row["best_batch"] == 3


def test_early_stopping_keeps_the_best_state(stream):
    # A huge lr makes the model oscillate; whatever the last batches did, the kept state is the best one.
    cfg = _config(lr=5.0, lr_min=5.0, max_batches=40, eval_every=2, patience=100)
    trainer = StreamTrainer(stream, make_policy("uniform"), cfg, Budget(mean_size=3))
    row = trainer.run_segment()
    seg = stream.segments[0]
    m = trainer.fitness(trainer.model, seg.evaluation("valid"), seg.n_items)
    assert 0.5 * (m["recall@20"] + m["ndcg@20"]) == pytest.approx(row["valid_fitness"], abs=1e-12)


@pytest.mark.parametrize("model", ["mf", "lightgcn"])
def test_state_dict_resume_gives_identical_numbers(stream, tmp_path, model):
    policy = "random"  # exercises the policy RNG too
    torch.manual_seed(0)
    straight = StreamTrainer(stream, make_policy(policy), _config(model=model), Budget(mean_size=3))
    rows = [straight.run_segment() for _ in stream.segments]

    torch.manual_seed(0)
    first = StreamTrainer(stream, make_policy(policy), _config(model=model), Budget(mean_size=3))
    first.run_segment()
    checkpoint.save(first.state_dict(), tmp_path / "ck.pt")
    del first
    torch.manual_seed(123)  # the checkpoint, not the process, decides what comes next
    resumed = StreamTrainer(stream, make_policy(policy), _config(model=model), Budget(mean_size=3))
    resumed.load_state_dict(checkpoint.load(tmp_path / "ck.pt"))
    while not resumed.done:
        resumed.run_segment()
    assert _comparable(resumed.results) == _comparable(rows)


def test_resume_refuses_other_settings(stream, tmp_path):
    trainer = StreamTrainer(stream, make_policy("uniform"), _config(), Budget(mean_size=3))
    trainer.run_segment()
    state = trainer.state_dict()
    with pytest.raises(ValueError, match="d_max"):
        StreamTrainer(stream, make_policy("uniform"), _config(d_max=16), Budget(mean_size=3)).load_state_dict(state)
    with pytest.raises(ValueError, match="policy"):
        StreamTrainer(stream, make_policy("freq-rule"), _config(), Budget(mean_size=3)).load_state_dict(state)


def test_checkpoint_save_is_atomic_and_load_of_missing_is_none(tmp_path):
    path = tmp_path / "sub" / "ck.pt"
    assert checkpoint.load(path) is None
    checkpoint.save({"a": torch.arange(3), "b": [1, 2.5, "x"]}, path)
    checkpoint.save({"a": torch.arange(4)}, path)
    assert torch.equal(checkpoint.load(path)["a"], torch.arange(4))
    assert [p.name for p in path.parent.iterdir()] == ["ck.pt"]  # no temporary left behind


def test_paper_protocol_early_stops_on_the_test_part():
    stream = prepare_stream(synthetic_stream(120, 80, 2400, seed=1), segmentation="count", n_segments=2,
                            protocol="paper", seed=1)
    assert all(len(seg.valid) == 0 for seg in stream.segments)
    trainer = StreamTrainer(stream, make_policy("uniform"), _config(), Budget(mean_size=3))
    row = trainer.run_segment()
    assert row["valid_fitness"] == pytest.approx(0.5 * (row["recall@20"] + row["ndcg@20"]), abs=1e-12)
