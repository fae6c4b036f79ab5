"""The built-in memory models by name, and the agent a config or a user asks for."""

from __future__ import annotations

from metabelief.agents.base import ActorCritic
from metabelief.agents.gru import GRUAgent
from metabelief.agents.lru import LRUAgent
from metabelief.agents.lstm import LSTMAgent
from metabelief.agents.oracle import BeliefOracleAgent
from metabelief.agents.rnn import ElmanAgent
from metabelief.tasks.base import TaskFamily

CELLS: dict[str, type[ActorCritic]] = {
    "lstm": LSTMAgent,
    "gru": GRUAgent,
    "rnn": ElmanAgent,
    "lru": LRUAgent,
    "oracle": BeliefOracleAgent,
}


def agent_for(
    family: TaskFamily,
    hidden_size: int = 48,
    time_input: bool = False,
    *,
    cell: str = "lstm",
    predictive: bool = False,
) -> ActorCritic:
    """The built-in actor-critic ``cell`` (one of ``CELLS``) sized for ``family``'s actions,
    observations and horizon; ``predictive`` adds the head of ``metabelief.train.predictive``."""
    if not all(hasattr(family, name) for name in ("num_actions", "obs_size", "horizon")):
        raise ValueError(
            f"family must be a task family (with num_actions, obs_size and horizon), got {family!r}"
        )
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
    sizes = dict(
        num_actions=family.num_actions,
        obs_size=family.obs_size,
        horizon=family.horizon,
        hidden_size=hidden_size,
        time_input=time_input,
        predictive=predictive,
    )
    if cell == "oracle":
        return BeliefOracleAgent(**sizes, family=family)
    return CELLS[cell](**sizes)
