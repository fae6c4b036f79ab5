"""Recurrent agents behind one protocol (``metabelief.agents.base``): the built-in memory models
(LSTM, GRU, Elman RNN, a linear recurrent unit, the belief oracle) and ``agent_for``."""

from metabelief.agents.base import REQUIRED_MEMBERS, ActorCritic, Agent, check_agent, unroll
from metabelief.agents.gru import GRUAgent
from metabelief.agents.lru import LRUAgent
from metabelief.agents.lstm import LSTMAgent
from metabelief.agents.oracle import BeliefOracleAgent
from metabelief.agents.registry import CELLS, agent_for
from metabelief.agents.rnn import ElmanAgent

__all__ = [
    "CELLS",
    "REQUIRED_MEMBERS",
    "ActorCritic",
    "Agent",
    "BeliefOracleAgent",
    "ElmanAgent",
    "GRUAgent",
    "LRUAgent",
    "LSTMAgent",
    "agent_for",
    "check_agent",
    "unroll",
]
