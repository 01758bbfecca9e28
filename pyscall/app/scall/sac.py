"""Soft Actor-Critic core of the SCALL agent (SCALL.md section 3): small, plain torch, CPU.

The agent maps a fixed-length state to `action_dim` numbers in (0,1): a tanh-squashed Gaussian mapped
by a = (tanh(u) + 1) / 2. Log-probabilities are densities of the returned action `a` in (0,1)-space,
so the same space is used by the entropy term, the critics' inputs and the replay buffer.

Replay sampling favours recent transitions: with n transitions held, the i-th oldest (i = 0 oldest,
i = n-1 newest) is drawn with probability proportional to exp(recency * i / (n-1)), with replacement.
The newest is thus exp(recency) times as likely as the oldest (about 7.4x at the default 2.0) whatever
n is, so old transitions keep being sampled; recency = 0 is uniform.

All randomness (network init, exploration noise, minibatches) comes from one torch.Generator owned by
the SAC object, and `state_dict()` holds everything needed to continue bit-exactly.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_INT_FIELDS = ("hidden", "buffer_size", "batch_size", "small_buffer", "updates_per_step")


def _is_real(v: Any) -> bool:
    """A finite real python or numpy number, bools excluded."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) \
        and math.isfinite(v)


@dataclass(frozen=True)
class SACConfig:
    hidden: int = 512             # two hidden ReLU layers, actor and critics alike
    actor_lr: float = 2e-4
    critic_lr: float = 3e-4
    weight_decay: float = 1e-4    # Adam weight_decay, on both optimizers
    gamma: float = 0.99
    tau: float = 0.005            # Polyak rate of the target critics
    entropy: float = 0.2          # fixed entropy weight (alpha)
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    buffer_size: int = 10_000
    batch_size: int = 8
    small_buffer: int = 12        # batch 1 while the buffer holds <= this many transitions
    updates_per_step: int = 3
    recency: float = 2.0          # newest transition exp(recency) times as likely as the oldest

    def __post_init__(self):
        for name in _INT_FIELDS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"SACConfig.{name} must be an int, got {v!r}")
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name not in _INT_FIELDS and not _is_real(v):
                raise ValueError(f"SACConfig.{f.name} must be a finite number, got {v!r}")
            # plain python numbers, so that state_dict() stays loadable with weights_only=True
            object.__setattr__(self, f.name, int(v) if f.name in _INT_FIELDS else float(v))
        checks = [("hidden", self.hidden >= 1, ">= 1"), ("actor_lr", self.actor_lr > 0, "> 0"),
                  ("critic_lr", self.critic_lr > 0, "> 0"), ("weight_decay", self.weight_decay >= 0, ">= 0"),
                  ("gamma", 0 <= self.gamma <= 1, "in [0, 1]"), ("tau", 0 < self.tau <= 1, "in (0, 1]"),
                  ("entropy", self.entropy >= 0, ">= 0"),
                  ("log_std_max", self.log_std_min < self.log_std_max, "> log_std_min"),
                  ("buffer_size", self.buffer_size >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
                  ("small_buffer", self.small_buffer >= 0, ">= 0"),
                  ("updates_per_step", self.updates_per_step >= 1, ">= 1"), ("recency", self.recency >= 0, ">= 0")]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"SACConfig.{name} must be {rule}, got {getattr(self, name)!r}")


def _mlp(sizes: list[int], gen: torch.Generator) -> nn.Sequential:
    """Linear/ReLU stack initialised like nn.Linear's default, but from `gen` (never the global RNG)."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = torch.nn.utils.skip_init(nn.Linear, fan_in, fan_out)
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            lin.weight.uniform_(-bound, bound, generator=gen)
            lin.bias.uniform_(-bound, bound, generator=gen)
        layers += [lin] if i == len(sizes) - 2 else [lin, nn.ReLU()]
    return nn.Sequential(*layers)


def _clone(obj: Any) -> Any:
    """Deep copy of a state-dict tree, so a saved dict does not change as training goes on."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj


def _vector(x: Any, n: int, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be a 1-D array of {n} numbers") from e
    if arr.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} must be finite")
    return torch.from_numpy(arr).float()


class ReplayBuffer:
    """Ring buffer of (state, action, reward, next_state, done) rows; the oldest is dropped when full."""

    def __init__(self, capacity: int, recency: float):
        self.capacity, self.recency = capacity, recency
        self.rows: list[tuple[torch.Tensor, ...]] = []
        self.pos = 0  # next slot to write; once full, also the slot of the oldest row

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, row: tuple[torch.Tensor, ...]) -> None:
        if len(self.rows) < self.capacity:
            self.rows.append(row)
        else:
            self.rows[self.pos] = row
        self.pos = (self.pos + 1) % self.capacity

    def probabilities(self) -> torch.Tensor:
        """Sampling probability of each slot (float64, slot order)."""
        n = len(self.rows)
        age_rank = (torch.arange(n, dtype=torch.float64) - self.pos) % n  # 0 = oldest, n-1 = newest
        w = torch.exp(self.recency * age_rank / max(n - 1, 1))
        return w / w.sum()

    def sample(self, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
        idx = torch.multinomial(self.probabilities(), batch, replacement=True, generator=gen)
        cols = [torch.stack([self.rows[i][c] for i in idx.tolist()]) for c in range(5)]
        return idx, cols

    def state_dict(self) -> dict:
        cols = [torch.stack([r[c] for r in self.rows]) if self.rows else torch.zeros(0) for c in range(5)]
        return {"columns": cols, "pos": self.pos}

    def load_state_dict(self, sd: dict, row_shapes: list[tuple[int, ...]]) -> None:
        cols, pos = sd["columns"], int(sd["pos"])
        n = len(cols[0])
        if n > self.capacity or not 0 <= pos < self.capacity or (n < self.capacity and pos != n) \
                or any(len(c) != n or (n and tuple(c.shape[1:]) != shape) for c, shape in zip(cols, row_shapes)):
            raise ValueError("inconsistent replay buffer in state dict")
        self.rows = [tuple(c[i].clone() for c in cols) for i in range(n)]
        self.pos = pos


class SAC:
    """Soft Actor-Critic with twin critics, target critics and a fixed entropy weight."""

    def __init__(self, state_dim: int, action_dim: int = 3, config: SACConfig = SACConfig(), seed: int = 0):
        if not isinstance(config, SACConfig):
            raise ValueError(f"config must be a SACConfig, got {type(config).__name__}")
        for name, v in (("state_dim", state_dim), ("action_dim", action_dim)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        self.state_dim, self.action_dim, self.config = int(state_dim), int(action_dim), config
        c = config
        self.gen = torch.Generator().manual_seed(int(seed))
        self.actor = _mlp([state_dim, c.hidden, c.hidden, 2 * action_dim], self.gen)
        self.critic = nn.ModuleList(_mlp([state_dim + action_dim, c.hidden, c.hidden, 1], self.gen) for _ in range(2))
        self.critic_target = nn.ModuleList(_mlp([state_dim + action_dim, c.hidden, c.hidden, 1], self.gen)
                                           for _ in range(2))
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        # fused: one kernel per step instead of ~10 tensor ops per parameter (the update's main cost on the CPU)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr, weight_decay=c.weight_decay,
                                          fused=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.critic_lr, weight_decay=c.weight_decay,
                                           fused=True)
        self.buffer = ReplayBuffer(c.buffer_size, c.recency)

    def start_at(self, action) -> None:
        """Make the deterministic action `action` (in (0,1)) for every state: the mean head's weights start at
        zero and its bias at atanh(2a - 1). Gradients still reach those weights through the hidden layer."""
        a = _vector(action, self.action_dim, "action").clamp(1e-4, 1 - 1e-4)
        head = self.actor[-1]
        with torch.no_grad():
            head.weight[:self.action_dim].zero_()
            head.bias[:self.action_dim] = torch.atanh(2 * a - 1)

    # -- policy --------------------------------------------------------------------------------------------
    def _policy(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.actor(s).chunk(2, dim=-1)
        return mean, log_std.clamp(self.config.log_std_min, self.config.log_std_max)

    def _sample(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action in (0,1) and its log-density there (summed over action coordinates)."""
        mean, log_std = self._policy(s)
        noise = torch.randn(mean.shape, generator=self.gen)
        u = mean + log_std.exp() * noise
        logp_u = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # da/du = (1 - tanh(u)^2) / 2, and log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) stays finite.
        log_jac = (2 * (math.log(2) - u - F.softplus(-2 * u)) - math.log(2)).sum(-1)
        return (torch.tanh(u) + 1) / 2, logp_u - log_jac

    def _q(self, nets: nn.ModuleList, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        sa = torch.cat([s, a], dim=-1)
        return torch.minimum(nets[0](sa), nets[1](sa)).squeeze(-1)

    def act(self, state, deterministic: bool = False) -> np.ndarray:
        """An action in (0,1)^action_dim (float64; a saturated float32 tanh can round to exactly 0 or 1).

        Stochastic: a policy sample, drawing from the SAC's generator. Deterministic: (tanh(mean) + 1) / 2.
        """
        s = _vector(state, self.state_dim, "state")
        with torch.no_grad():
            if deterministic:
                a = (torch.tanh(self._policy(s)[0]) + 1) / 2
            else:
                a = self._sample(s.unsqueeze(0))[0].squeeze(0)
        return a.double().numpy()

    # -- learning ------------------------------------------------------------------------------------------
    def store(self, state, action, reward, next_state, done: bool = False) -> None:
        """Add a transition (all inputs checked first; a bad one raises ValueError and stores nothing)."""
        s = _vector(state, self.state_dim, "state")
        a = _vector(action, self.action_dim, "action")
        if ((a < 0) | (a > 1)).any():
            raise ValueError(f"action must lie in [0, 1], got {a.tolist()}")
        if not _is_real(reward):
            raise ValueError(f"reward must be a finite real number, got {reward!r}")
        s2 = _vector(next_state, self.state_dim, "next_state")
        if not isinstance(done, (bool, int, np.bool_, np.integer)) or done not in (0, 1):
            raise ValueError(f"done must be a bool, got {done!r}")
        self.buffer.add((s, a, torch.tensor(float(reward)), s2, torch.tensor(float(done))))

    def update(self) -> dict:
        """One gradient step of the critics, then of the actor, then the Polyak update of the targets.

        Returns {"critic_loss", "actor_loss", "logp", "batch_size"}, or {} (and does nothing) on an empty buffer.
        """
        n = len(self.buffer)
        if n == 0:
            return {}
        c = self.config
        _, (s, a, r, s2, done) = self.buffer.sample(1 if n <= c.small_buffer else c.batch_size, self.gen)
        with torch.no_grad():
            a2, logp2 = self._sample(s2)
            y = r + c.gamma * (1 - done) * (self._q(self.critic_target, s2, a2) - c.entropy * logp2)
        sa = torch.cat([s, a], dim=-1)
        critic_loss = sum(F.mse_loss(q(sa).squeeze(-1), y) for q in self.critic)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # The critics are held fixed while the actor climbs them.
        self.critic.requires_grad_(False)
        try:
            a_pi, logp = self._sample(s)
            actor_loss = (c.entropy * logp - self._q(self.critic, s, a_pi)).mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
        finally:
            self.critic.requires_grad_(True)

        with torch.no_grad():
            for p_t, p in zip(self.critic_target.parameters(), self.critic.parameters()):
                p_t.mul_(1 - c.tau).add_(p, alpha=c.tau)
        return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(), "logp": logp.mean().item(),
                "batch_size": len(r)}

    def train_step(self) -> list[dict]:
        """`config.updates_per_step` updates (the paper code does 3 after each stored transition)."""
        return [self.update() for _ in range(self.config.updates_per_step)]

    # -- checkpointing -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue bit-exactly; loadable by torch.load(..., weights_only=True)."""
        return _clone({
            "state_dim": self.state_dim, "action_dim": self.action_dim, "config": asdict(self.config),
            "actor": dict(self.actor.state_dict()), "critic": dict(self.critic.state_dict()),
            "critic_target": dict(self.critic_target.state_dict()),
            "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
            "buffer": self.buffer.state_dict(), "rng": self.gen.get_state(),
        })

    def load_state_dict(self, sd: dict) -> None:
        """Restore a `state_dict()`, config included (the saved config replaces this object's).

        Everything is loaded into a fresh SAC first, so a bad dict raises and leaves this object unchanged.
        """
        if (sd["state_dim"], sd["action_dim"]) != (self.state_dim, self.action_dim):
            raise ValueError(f"state dict is for state_dim={sd['state_dim']}, action_dim={sd['action_dim']}; "
                             f"this SAC has {self.state_dim}, {self.action_dim}")
        new = SAC(self.state_dim, self.action_dim, SACConfig(**sd["config"]))
        new.actor.load_state_dict(sd["actor"])
        new.critic.load_state_dict(sd["critic"])
        new.critic_target.load_state_dict(sd["critic_target"])
        new.actor_opt.load_state_dict(sd["actor_opt"])
        new.critic_opt.load_state_dict(sd["critic_opt"])
        S, A = self.state_dim, self.action_dim
        new.buffer.load_state_dict(sd["buffer"], [(S,), (A,), (), (S,), ()])
        new.gen.set_state(sd["rng"])
        self.__dict__.update(new.__dict__)
