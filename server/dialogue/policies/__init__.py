"""Dialogue policies (rules, memoization, a machine-learned policy) and their ensemble."""

from server.dialogue.policies.ensemble import PolicyEnsemble
from server.dialogue.policies.prediction import PolicyPrediction

__all__ = ["PolicyEnsemble", "PolicyPrediction"]
