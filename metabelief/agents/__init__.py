"""Recurrent agents: the LSTM actor-critic of Wang et al. (2016)."""

from metabelief.agents.lstm import LSTMActorCritic, RecurrentAgent, agent_for

__all__ = ["LSTMActorCritic", "RecurrentAgent", "agent_for"]
