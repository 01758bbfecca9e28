"""The SCALL agent: its state, its action mapping, its search, and an exact kill-and-resume through the CLI."""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pyscall.app.data.stream import prepare_stream
from pyscall.app.data.synthetic import synthetic_stream
from pyscall.app.scall import make_policy
from pyscall.app.scall.agent import (AgentConfig, ScallPolicy, action_to_shape, agent_state, pooled_profile,
                                 shape_to_action, state_dim)
from pyscall.app.scall.policies import UniformPolicy
from pyscall.app.scall.sac import SACConfig
from pyscall.app.train import Budget, StreamTrainer, TrainConfig

TINY = ["stream", "--data", "synthetic:150,100,3000", "--segmentation", "count", "--n-segments", "3",
        "--model", "mf", "--d-max", "8", "--mean-size", "3", "--batch-size", "128", "--max-batches", "10",
        "--eval-every", "5", "--seed", "7", "--no-progress"]


def _run(args, env_extra=None):
    # cwd: not the checkout, whose pyscall/ has no built _C; the installed package must run
    return subprocess.run([sys.executable, "-m", "pyscall.app.cli", *args], env={**os.environ, **(env_extra or {})},
                          capture_output=True, text=True, timeout=300, cwd=tempfile.gettempdir())


def _numbers(out):
    return [{k: v for k, v in r.items() if not k.endswith("_s")}  # times differ
            for r in json.loads((out / "results.json").read_text())["segments"]]


def _brute_profile(freq, groups):
    # every rank repeated `groups` times: n * groups values in `groups` runs of n, one run per group
    f = np.sort(np.asarray(freq, dtype=np.float64))[::-1]
    f = (f - f.min()) / (f.max() - f.min()) if f.max() > f.min() else np.zeros_like(f)
    return np.repeat(f, groups).reshape(groups, len(f)).mean(1)


@pytest.mark.parametrize("n", [1, 3, 7, 64, 100, 1000])
def test_pooled_profile_equals_brute_force(n):
    rng = np.random.default_rng(n)
    freq = rng.zipf(1.7, n) % 1000
    got = pooled_profile(freq, 16)
    assert got.shape == (16,)
    np.testing.assert_allclose(got, _brute_profile(freq, 16), atol=1e-12)
    if n % 16 == 0:  # then the groups are plain groups of ranks
        f = np.sort(freq)[::-1].astype(float)
        f = (f - f.min()) / (f.max() - f.min())
        np.testing.assert_allclose(got, f.reshape(16, -1).mean(1), atol=1e-12)


class _Table:
    def __init__(self, n, d_max, rng):
        self.widths = torch.from_numpy(rng.integers(1, d_max + 1, n).astype(np.int32))
        self.dense = torch.from_numpy(rng.normal(size=(n, d_max)).astype(np.float32))

    def to_dense(self):
        return self.dense


@pytest.mark.parametrize("n_users,n_items", [(5, 3), (300, 40), (20_000, 9_000)])
def test_state_has_one_length_and_meaning_whatever_the_stream(n_users, n_items):
    rng = np.random.default_rng(0)
    cfg = AgentConfig(groups=8)
    uf, itf = rng.integers(0, 50, n_users), rng.integers(0, 50, n_items)
    tables = (_Table(n_users, 16, rng), _Table(n_items, 16, rng))
    s = agent_state(uf, itf, 0.25, tables, 1, 16, cfg)
    assert s.shape == (state_dim(16, cfg),) == (2 * 8 + 2 + 2 * 16 + 2,)
    np.testing.assert_allclose(s[:8], _brute_profile(uf, 8), atol=1e-12)
    np.testing.assert_allclose(s[8:16], _brute_profile(itf, 8), atol=1e-12)
    assert s[16] == 0.25 and s[17] == pytest.approx(n_users / (n_users + n_items))
    np.testing.assert_allclose(s[18:34], tables[0].dense.double().mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(s[34:50], tables[1].dense.double().mean(0).numpy(), atol=1e-5)
    spread = lambda w: float(w.max() - w.min()) / 15  # noqa: E731
    assert s[50] == pytest.approx(spread(tables[0].widths)) and s[51] == pytest.approx(spread(tables[1].widths))
    lean = AgentConfig(groups=8, embeddings=False, spreads=False)
    assert agent_state(uf, itf, 0.0, tables, 1, 16, lean).shape == (state_dim(16, lean),) == (18,)


def test_action_maps_to_the_alpha_range_on_every_scale():
    log, linear = AgentConfig(alpha_scale="log"), AgentConfig(alpha_scale="linear")
    assert action_to_shape([0.3, 0.0, 1.0], log)[1:] == pytest.approx((0.1, 30.0))
    assert action_to_shape([0.3, 0.5, 0.5], log)[1] == pytest.approx(np.sqrt(0.1 * 30))
    assert action_to_shape([0.3, 0.5, 0.5], linear)[1] == pytest.approx(0.1 + 0.5 * 29.9)
    assert 0 < action_to_shape([0.0, 0, 0], log)[0] < action_to_shape([1.0, 0, 0], log)[0] < 1
    with pytest.raises(ValueError, match="alpha_scale"):
        AgentConfig(alpha_scale="cubic")


def test_the_prior_scale_centres_the_action_box_on_the_prior():
    cfg = AgentConfig(prior=(0.3, 0.5, 2.0))
    assert cfg.alpha_scale == "prior"  # the default
    assert action_to_shape([0.5, 0.5, 0.5], cfg) == pytest.approx((0.3, 0.5, 2.0))
    # the ends are the full ranges; each half is linear (the alphas in log)
    assert action_to_shape([0.0, 0.0, 1.0], cfg) == pytest.approx((1e-3, 0.1, 30.0))
    assert action_to_shape([0.25, 0.25, 0.75], cfg) == pytest.approx((0.15, np.sqrt(0.1 * 0.5), np.sqrt(2.0 * 30)))
    rng = np.random.default_rng(0)
    for a in rng.random((20, 3)):
        assert shape_to_action(action_to_shape(a, cfg), cfg) == pytest.approx(a, abs=1e-9)
    with pytest.raises(ValueError, match="needs a prior"):
        AgentConfig(prior=None)
    assert AgentConfig(prior=None, alpha_scale="log").prior is None


def _tiny_agent(**kw):
    return AgentConfig(groups=8, min_steps=3, max_steps=5, probe_batches=3, sac=SACConfig(hidden=32), **kw)


@pytest.mark.parametrize("model,probe", [("mf", "warm"), ("lightgcn", "fresh"), ("lightgcn", "replay")])
def test_search_then_deploy_holds_the_budget_and_records_the_search(model, probe):
    stream = prepare_stream(synthetic_stream(120, 80, 2400, seed=1), segmentation="count", n_segments=3, seed=1)
    cfg = TrainConfig(model=model, d_max=8, batch_size=128, max_batches=8, eval_every=4, patience=2, seed=3)
    lines = []
    policy = ScallPolicy(_tiny_agent(probe=probe), seed=3, log=lines.append)
    trainer = StreamTrainer(stream, policy, cfg, Budget(mean_size=3))
    rows = [trainer.run_segment() for _ in stream.segments]
    assert "user_share" not in rows[0]  # segment 0: uniform, no search
    for row, seg in zip(rows, stream.segments):
        assert row["params"] == row["budget_params"] == 3 * (seg.n_users + seg.n_items)
        assert row["bytes"] <= row["budget_bytes"]
    assert [h["segment"] for h in policy.history] == [1, 2]
    for h, row in zip(policy.history, rows[1:]):
        assert 3 <= len(h["steps"]) <= 5 == policy.config.max_steps
        assert row["search_steps"] == len(h["steps"]) and row["search_s"] > 0
        assert h["deployed"] == [row["user_share"], row["alpha_user"], row["alpha_item"]]
        assert all(np.isfinite(s["reward"]) for s in h["steps"])
    assert len(lines) == sum(len(h["steps"]) for h in policy.history)
    assert len(policy.sac.buffer) == len(lines)  # one replay buffer across segments


def test_agent_checkpoint_refuses_other_settings():
    a, b = ScallPolicy(_tiny_agent(), seed=1), ScallPolicy(_tiny_agent(probe="fresh"), seed=1)
    with pytest.raises(ValueError, match="other settings"):
        b.load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="keeps no state"):
        make_policy("uniform").load_state_dict(a.state_dict())


SCALL_TINY = TINY + ["--policy", "scall", "--search-steps", "3,4", "--probe-batches", "2", "--state-groups", "8"]


def test_scall_killed_after_a_segment_resumes_to_the_same_numbers(tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    done = _run(SCALL_TINY + ["--out", str(straight)])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "search t=1 step  1" in done.stdout
    # tests/cli_exit_after.py: the run ends right after segment 1's checkpoint, as a kill would
    killed = subprocess.run([sys.executable, str(Path(__file__).with_name("cli_exit_after.py")), "1", *SCALL_TINY,
                             "--out", str(broken)], capture_output=True, text=True, timeout=300,
                            cwd=tempfile.gettempdir())
    assert killed.returncode == 3, killed.stderr[-2000:]
    resumed = _run(SCALL_TINY + ["--out", str(broken), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _numbers(broken) == _numbers(straight)
    searches = [json.loads((d / "results.json").read_text())["searches"]["scall"] for d in (straight, broken)]
    for s in searches:
        for h in s:
            h.pop("search_seconds")
    assert searches[0] == searches[1] and [h["segment"] for h in searches[0]] == [1, 2]
    assert (straight / "agent.png").exists()


class _ReplayingUniform(UniformPolicy):
    replays = True


@pytest.mark.parametrize("model,start", [("lightgcn", "warm"), ("lightgcn", "fresh"), ("lightgcn", "replay"),
                                         ("mf", "warm")])
def test_probes_side_by_side_score_as_probes_alone(model, start):
    stream = prepare_stream(synthetic_stream(120, 80, 2400, seed=1), segmentation="count", n_segments=2, seed=1)
    cfg = TrainConfig(model=model, d_max=8, batch_size=128, max_batches=8, eval_every=4, patience=2, seed=3)
    trainer = StreamTrainer(stream, _ReplayingUniform(), cfg, Budget(mean_size=3))
    trainer.run_segment()
    trainer.run_segment()
    seg = stream.segments[1]
    prober = trainer.prober(seg, 4, start=start)
    assert prober.start == start
    g = torch.Generator().manual_seed(0)
    sizes = [(torch.randint(1, 9, (seg.n_users,), generator=g, dtype=torch.int32),
              torch.randint(1, 9, (seg.n_items,), generator=g, dtype=torch.int32)) for _ in range(3)]
    alone = [prober.fitness(u, i) for u, i in sizes]
    before = trainer.users.to_dense().clone()
    assert prober.fitness_many(sizes) == pytest.approx(alone, abs=1e-6)
    assert len(set(alone)) > 1  # the sizes matter
    assert torch.equal(trainer.users.to_dense(), before)  # probes train copies, never the deployed tables


def test_the_first_action_is_the_prior():
    cfg = AgentConfig(groups=8, prior=(0.3, 0.5, 2.0), sac=SACConfig(hidden=32))
    policy = ScallPolicy(cfg, seed=0)
    from pyscall.app.scall.sac import SAC
    sac = SAC(state_dim(8, cfg), 3, cfg.sac, seed=0)
    sac.start_at(shape_to_action(cfg.prior, cfg))
    for s in np.random.default_rng(0).normal(size=(3, state_dim(8, cfg))):
        assert action_to_shape(sac.act(s, deterministic=True), cfg) == pytest.approx(cfg.prior, rel=1e-4)
    with pytest.raises(ValueError, match="prior"):
        AgentConfig(prior=(1.5, 0.5, 0.5))
    assert policy.sac is None  # built at the first search


def test_replay_probes_start_from_the_tables_before_the_previous_deployment():
    stream = prepare_stream(synthetic_stream(120, 80, 2400, seed=1), segmentation="count", n_segments=3, seed=1)
    cfg = TrainConfig(model="mf", d_max=8, batch_size=128, max_batches=8, eval_every=4, patience=2, seed=3)
    trainer = StreamTrainer(stream, _ReplayingUniform(), cfg, Budget(mean_size=3))
    trainer.run_segment()
    assert trainer.start is None  # segment 0 starts from nothing
    assert trainer.prober(stream.segments[0], 2, start="replay").start == "warm"  # so its probes cannot replay
    after_0 = [t.to_dense().clone() for t in trainer.tables()]
    trainer.run_segment()
    assert [torch.equal(s.to_dense(), a) for s, a in zip(trainer.start, after_0)] == [True, True]
    assert all(s.budget_bytes is None for s in trainer.start)  # a search copy, outside the tables' budget
    seg = stream.segments[1]
    g = torch.Generator().manual_seed(0)
    widths = (torch.randint(1, 9, (seg.n_users,), generator=g, dtype=torch.int32),
              torch.randint(1, 9, (seg.n_items,), generator=g, dtype=torch.int32))
    prober = trainer.prober(seg, 2, start="replay")
    tables = prober._tables(*widths)
    again = prober._tables(*widths)
    for table, twin, start, w in zip(tables, again, after_0, widths):
        dense = table.to_dense()
        assert torch.equal(table.widths, w)
        assert torch.equal(dense, twin.to_dense())  # new rows draw the same init in every probe
        old = len(start)
        keep = torch.minimum(w[:old], torch.full_like(w[:old], 8))
        mask = torch.arange(8)[None, :] < keep[:, None]
        assert torch.equal(dense[:old][mask], start[mask])  # the rows it had, cut or zero-padded
        assert not dense[:old][~mask].any()
    before = torch.get_rng_state()
    prober.fitness(*widths)
    assert torch.equal(torch.get_rng_state(), before)  # probes leave the run's RNG alone
