"""SAC core: learns a bandit, Polyak targets, bit-exact state_dict round-trip, recency replay, input checks."""
import io
import math

import numpy as np
import pytest
import torch

from pyscall.app.scall.sac import SAC, ReplayBuffer, SACConfig

SMALL = SACConfig(hidden=32)


@pytest.fixture(autouse=True)
def one_thread():
    # Two threads on these tiny matmuls run up to ~30x slower when the other core is busy.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _fill(agent, n, start=0, rng=None):
    rng = rng or np.random.default_rng(start)
    for i in range(start, start + n):
        s, s2 = rng.normal(size=agent.state_dim), rng.normal(size=agent.state_dim)
        agent.store(s, agent.act(s), float(i), s2, done=bool(i % 3 == 0))


def _params(agent):
    mods = [agent.actor, agent.critic, agent.critic_target]
    return [p.detach().clone() for m in mods for p in m.parameters()]


def _rewards(agent):
    return [row[2].item() for row in agent.buffer.rows]


# -- learning ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target,seed", [((0.2, 0.7, 0.85), 0), ((0.8, 0.3, 0.5), 1), ((0.15, 0.15, 0.9), 2)])
def test_learns_a_one_step_bandit(target, seed):
    """Reward -||a - a*||^2 at a fixed state: the deterministic action goes to a* (0.01-0.03 off at 300 steps)."""
    target, tol = np.array(target), 0.05
    # A small entropy weight against a reward of scale 1 (the optimum's spread is sqrt(0.01/2) = 0.07) and a
    # faster critic on bigger batches than the paper's, so that 300 steps suffice.
    agent = SAC(8, 3, SACConfig(hidden=64, entropy=0.01, critic_lr=3e-3, batch_size=32), seed=seed)
    s = np.linspace(-1, 1, 8)
    assert np.abs(agent.act(s, deterministic=True) - target).max() > 2 * tol
    for _ in range(300):
        a = agent.act(s)
        agent.store(s, a, -float(((a - target) ** 2).sum()), s, done=True)
        agent.train_step()
    assert np.abs(agent.act(s, deterministic=True) - target).max() < tol


def test_default_config_builds_acts_and_trains():
    cfg = SACConfig()
    assert (cfg.hidden, cfg.actor_lr, cfg.critic_lr, cfg.weight_decay, cfg.gamma, cfg.tau, cfg.entropy) == \
        (512, 2e-4, 3e-4, 1e-4, 0.99, 0.005, 0.2)
    assert (cfg.log_std_min, cfg.log_std_max, cfg.buffer_size, cfg.batch_size, cfg.small_buffer,
            cfg.updates_per_step) == (-20, 2, 10_000, 8, 12, 3)
    agent = SAC(100)
    assert [m.out_features for m in agent.actor if isinstance(m, torch.nn.Linear)] == [512, 512, 6]
    assert [m.in_features for m in agent.critic[0] if isinstance(m, torch.nn.Linear)] == [103, 512, 512]
    _fill(agent, 14)
    losses = agent.train_step()
    assert len(losses) == 3 and all(math.isfinite(v) for d in losses for v in d.values())
    a = agent.act(np.zeros(100))
    assert a.dtype == np.float64 and a.shape == (3,) and ((a > 0) & (a < 1)).all()


def test_same_seed_same_actions_and_global_rngs_untouched():
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    runs = []
    for _ in range(2):
        agent = SAC(6, 3, SMALL, seed=7)
        _fill(agent, 20)
        agent.train_step()
        runs.append([agent.act(np.full(6, 0.1 * i)) for i in range(5)] + [agent.act(np.ones(6), True)])
    assert all(np.array_equal(x, y) for x, y in zip(*runs))
    other = SAC(6, 3, SMALL, seed=8)
    assert not np.array_equal(other.act(np.ones(6), True), runs[0][-1])
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_log_density_is_that_of_the_returned_action_in_unit_cube():
    agent = SAC(5, 3, SMALL, seed=2)
    s = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, logp = agent._sample(s)
        mean, log_std = agent._policy(s)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()),
        [torch.distributions.TanhTransform(), torch.distributions.AffineTransform(0.5, 0.5)])
    ok = ((a > 0.01) & (a < 0.99)).all(-1)  # away from saturation, where the reference is accurate
    assert ok.sum() > 32
    torch.testing.assert_close(logp[ok], dist.log_prob(a).sum(-1)[ok], rtol=1e-4, atol=1e-4)


# -- targets ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [0.005, 0.3])
def test_target_critics_follow_by_polyak_averaging(tau):
    agent = SAC(5, 3, SACConfig(hidden=16, tau=tau), seed=1)
    assert all(torch.equal(t, c) for t, c in zip(agent.critic_target.parameters(), agent.critic.parameters()))
    _fill(agent, 20)
    for _ in range(5):  # so that targets and critics differ before the checked update
        agent.update()
    old_target = [p.detach().clone() for p in agent.critic_target.parameters()]
    old_critic = [p.detach().clone() for p in agent.critic.parameters()]
    agent.update()
    new_critic = list(agent.critic.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(old_critic, new_critic))
    for t_new, t_old, c_new in zip(agent.critic_target.parameters(), old_target, new_critic):
        torch.testing.assert_close(t_new, (1 - tau) * t_old + tau * c_new.detach(), rtol=1e-6, atol=1e-7)
        assert not t_new.requires_grad


# -- state dict -------------------------------------------------------------------------------------------
def test_state_dict_round_trip_continues_bit_exactly():
    cfg = SACConfig(hidden=32, buffer_size=16, recency=1.5)
    a = SAC(6, 3, cfg, seed=3)
    _fill(a, 21)  # the ring buffer has wrapped: its write position is not 0
    for _ in range(4):
        a.train_step()
    sd = a.state_dict()
    f = io.BytesIO()
    torch.save(sd, f)
    f.seek(0)
    b = SAC(6, 3, SACConfig(hidden=32), seed=99)  # another seed and config: all of it comes from the dict
    b.load_state_dict(torch.load(f, weights_only=True))
    assert b.config == cfg and b.buffer.pos == a.buffer.pos == 5

    rng = np.random.default_rng(0)
    acts = []
    for step in range(6):
        s = rng.normal(size=6)
        act_a, act_b = a.act(s), b.act(s)
        assert np.array_equal(act_a, act_b)
        acts.append(act_a)
        a.store(s, act_a, float(step), s, False)
        b.store(s, act_b, float(step), s, False)
        assert a.train_step() == b.train_step()
    for x, y in zip(_params(a), _params(b)):
        assert torch.equal(x, y)
    assert _rewards(a) == _rewards(b)
    assert torch.equal(a.gen.get_state(), b.gen.get_state())
    assert a.actor_opt.state_dict()["state"][0]["step"] == b.actor_opt.state_dict()["state"][0]["step"]
    # The in-memory dict did not follow `a` as it trained on: loaded now, it repeats the first step.
    c = SAC(6, 3, cfg, seed=5)
    c.load_state_dict(sd)
    assert np.array_equal(c.act(np.random.default_rng(0).normal(size=6)), acts[0])


def test_load_state_dict_rejects_a_mismatch_and_changes_nothing():
    a = SAC(6, 3, SMALL, seed=0)
    _fill(a, 5)
    before, rewards = _params(a), _rewards(a)
    with pytest.raises(ValueError, match="state_dim"):
        a.load_state_dict(SAC(7, 3, SMALL).state_dict())
    bad = SAC(6, 3, SMALL).state_dict()
    bad["buffer"]["pos"] = 3  # 0 rows held, yet a write position of 3
    with pytest.raises(ValueError, match="replay buffer"):
        a.load_state_dict(bad)
    assert all(torch.equal(x, y) for x, y in zip(before, _params(a))) and _rewards(a) == rewards


# -- replay buffer ----------------------------------------------------------------------------------------
def test_buffer_drops_the_oldest_when_full():
    agent = SAC(4, 3, SACConfig(hidden=8, buffer_size=5))
    _fill(agent, 8)
    assert len(agent.buffer) == 5
    assert sorted(_rewards(agent)) == [3.0, 4.0, 5.0, 6.0, 7.0]


@pytest.mark.parametrize("n_added", [10, 17])  # 17: wrapped, so ages no longer follow slot order
def test_recency_sampling_favours_newer_transitions(n_added):
    buf = ReplayBuffer(10, recency=2.0)
    for i in range(n_added):
        buf.add(tuple(torch.tensor(float(i)) for _ in range(5)))
    gen = torch.Generator().manual_seed(0)
    draws = 40_000
    idx, cols = buf.sample(draws, gen)
    age = (cols[2] - (n_added - 10)).long()  # 0 = oldest held, 9 = newest
    freq = torch.bincount(age, minlength=10).double() / draws
    expected = torch.exp(2.0 * torch.arange(10) / 9)
    expected /= expected.sum()
    torch.testing.assert_close(freq, expected.double(), atol=0.01, rtol=0)
    assert freq[5:].sum() > 0.7 and freq[0] > 0.01  # newest half favoured, oldest still drawn
    slot_age = torch.tensor([int(row[2]) - (n_added - 10) for row in buf.rows])
    torch.testing.assert_close(buf.probabilities(), expected.double()[slot_age])
    assert torch.equal(idx.bincount(minlength=10)[slot_age.argsort()], torch.bincount(age, minlength=10))


def test_uniform_sampling_when_recency_is_zero():
    buf = ReplayBuffer(4, recency=0.0)
    for i in range(3):
        buf.add(tuple(torch.tensor(float(i)) for _ in range(5)))
    torch.testing.assert_close(buf.probabilities(), torch.full((3,), 1 / 3, dtype=torch.float64))


def test_batch_is_one_while_the_buffer_is_small():
    agent = SAC(4, 3, SACConfig(hidden=8, small_buffer=12, batch_size=8))
    assert agent.update() == {}
    sizes = []
    for i in range(14):
        _fill(agent, 1, start=i)
        sizes.append(agent.update()["batch_size"])
    assert sizes == [1] * 12 + [8, 8]


def test_update_on_an_empty_buffer_changes_nothing():
    agent = SAC(4, 3, SMALL)
    before, gen = _params(agent), agent.gen.get_state()
    assert agent.update() == {} and agent.train_step() == [{}, {}, {}]
    assert all(torch.equal(x, y) for x, y in zip(before, _params(agent)))
    assert torch.equal(gen, agent.gen.get_state())


# -- input checks -----------------------------------------------------------------------------------------
GOOD = dict(state=np.zeros(4), action=np.full(3, 0.5), reward=1.0, next_state=np.ones(4), done=False)


@pytest.mark.parametrize("field,value,match", [
    ("state", np.zeros(5), r"state must have shape \(4,\)"),
    ("state", np.zeros((1, 4)), r"state must have shape \(4,\)"),
    ("state", [0, 0, float("nan"), 0], "state must be finite"),
    ("state", "abcd", "state must be"),
    ("next_state", np.zeros(3), r"next_state must have shape \(4,\)"),
    ("next_state", [0, 0, 0, float("inf")], "next_state must be finite"),
    ("action", [0.5, 0.5], r"action must have shape \(3,\)"),
    ("action", [0.5, 1.2, 0.5], r"action must lie in \[0, 1\]"),
    ("action", [-0.01, 0.5, 0.5], r"action must lie in \[0, 1\]"),
    ("reward", float("nan"), "reward must be a finite real number"),
    ("reward", float("-inf"), "reward must be a finite real number"),
    ("reward", "1.0", "reward must be a finite real number"),
    ("reward", None, "reward must be a finite real number"),
    ("done", 2, "done must be a bool"),
])
def test_store_rejects_bad_inputs_and_changes_nothing(field, value, match):
    agent = SAC(4, 3, SMALL)
    _fill(agent, 3)
    rewards, gen = _rewards(agent), agent.gen.get_state()
    with pytest.raises(ValueError, match=match):
        agent.store(**{**GOOD, field: value})
    assert _rewards(agent) == rewards and agent.buffer.pos == 3 and torch.equal(gen, agent.gen.get_state())
    agent.store(**GOOD)  # the good inputs are accepted, numpy scalars and the closed interval included
    agent.store(GOOD["state"], np.array([0.0, 1.0, 0.5]), np.float32(-2.5), GOOD["next_state"], np.bool_(True))
    assert _rewards(agent) == rewards + [1.0, -2.5]


def test_act_rejects_a_bad_state_without_drawing_noise():
    agent = SAC(4, 3, SMALL)
    gen = agent.gen.get_state()
    for bad in (np.zeros(3), [1, 2, 3, float("nan")], torch.zeros(5)):
        with pytest.raises(ValueError, match="state must"):
            agent.act(bad)
    assert torch.equal(gen, agent.gen.get_state())
    assert np.array_equal(agent.act(torch.zeros(4), True), agent.act(np.zeros(4), True))


@pytest.mark.parametrize("kwargs,match", [
    (dict(hidden=0), "hidden must be >= 1"),
    (dict(hidden=2.5), "hidden must be an int"),
    (dict(batch_size=True), "batch_size must be an int"),
    (dict(actor_lr=0), "actor_lr must be > 0"),
    (dict(critic_lr=float("nan")), "critic_lr must be a finite number"),
    (dict(weight_decay=-1e-4), "weight_decay must be >= 0"),
    (dict(gamma=1.5), r"gamma must be in \[0, 1\]"),
    (dict(tau=0.0), r"tau must be in \(0, 1\]"),
    (dict(entropy=-0.1), "entropy must be >= 0"),
    (dict(log_std_min=3.0), "log_std_max must be > log_std_min"),
    (dict(buffer_size=0), "buffer_size must be >= 1"),
    (dict(small_buffer=-1), "small_buffer must be >= 0"),
    (dict(updates_per_step=0), "updates_per_step must be >= 1"),
    (dict(recency=-1.0), "recency must be >= 0"),
    (dict(recency=float("inf")), "recency must be a finite number"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SACConfig(**kwargs)


def test_bad_dims_and_config_type():
    for kw in (dict(state_dim=0), dict(state_dim=4, action_dim=0), dict(state_dim=4.0)):
        with pytest.raises(ValueError, match="_dim must be an int >= 1"):
            SAC(**kw)
    with pytest.raises(ValueError, match="config must be a SACConfig"):
        SAC(4, 3, {"hidden": 8})
    assert SACConfig(hidden=np.int64(8), gamma=np.float32(0.5)).hidden.__class__ is int  # plain numbers kept
