"""SCALL (Qu et al., CIKM 2024): per-entity embedding sizes for streaming recommenders, inside a budget."""
from .policies import POLICIES, make_policy
from .agent import ScallPolicy
from .sizes import power_law_sizes

POLICIES[ScallPolicy.name] = ScallPolicy  # here, not in policies.py: the agent builds on that module

__all__ = ["POLICIES", "ScallPolicy", "make_policy", "power_law_sizes"]
