"""The training configuration: one frozen dataclass from which every size is derived."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from metabelief.agents.lstm import RecurrentAgent, agent_for
from metabelief.tasks import registry
from metabelief.tasks.base import TaskFamily
from metabelief.tasks.validation import integer_at_least, positive_float, probability


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A2C on a registered task family, one full episode of fresh tasks per update (Wang et al. 2016).

    ``family_args`` are the family's keyword arguments as ``(name, value)`` pairs, so the config
    stays hashable and can be a static jit argument.
    """

    family: str = "bernoulli_bandit"
    family_args: tuple[tuple[str, Any], ...] = ()
    hidden_size: int = 48
    time_input: bool = False
    num_tasks: int = 2048  # tasks (episodes) per update
    num_updates: int = 400
    updates_per_chunk: int = 20  # updates per jitted call between progress-bar refreshes
    learning_rate: float = 7e-4
    max_grad_norm: float = 1.0
    gamma: float = 0.9
    value_coef: float = 0.05
    entropy_coef: float = 0.05
    seed: int = 0  # the first seed: seed i of the population is seed + i
    num_seeds: int = 1  # independent agents trained together, one vmapped axis (own init, tasks, actions)
    devices: int | None = 1  # devices each update's tasks are spread over, None: all (metabelief.sharding)

    def __post_init__(self):
        object.__setattr__(
            self, "family_args", tuple(sorted((str(k), _frozen(v)) for k, v in self.family_args))
        )
        for name in ("num_tasks", "num_updates", "updates_per_chunk", "hidden_size", "num_seeds"):
            integer_at_least(name, getattr(self, name), 1)
        integer_at_least("seed", self.seed, 0)
        if self.devices is not None:
            integer_at_least("devices", self.devices, 1)
            if self.num_tasks % self.devices:
                raise ValueError(
                    f"num_tasks ({self.num_tasks}) must be divisible by devices ({self.devices})"
                )
        for name in ("learning_rate", "max_grad_norm"):
            positive_float(name, getattr(self, name))
        probability("gamma", self.gamma)
        for name in ("value_coef", "entropy_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        self.make_family()  # an unknown family or bad family argument fails here, before any jit

    def make_family(self) -> TaskFamily:
        return registry.make(self.family, **dict(self.family_args))

    def make_agent(self) -> RecurrentAgent:
        return agent_for(self.make_family(), hidden_size=self.hidden_size, time_input=self.time_input)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seed of each agent of the population, in order."""
        return tuple(range(self.seed, self.seed + self.num_seeds))

    def for_seed(self, index: int) -> TrainConfig:
        """The one-seed config that trains exactly agent ``index`` of this population."""
        integer_at_least("index", index, 0)
        if index >= self.num_seeds:
            raise ValueError(f"index must be < num_seeds ({self.num_seeds}), got {index!r}")
        return dataclasses.replace(self, seed=self.seed + index, num_seeds=1)

    @property
    def num_chunks(self) -> int:
        return -(-self.num_updates // self.updates_per_chunk)

    @property
    def steps_per_update(self) -> int:
        """Agent steps of one update of ONE seed (the population takes ``num_seeds`` times as many)."""
        return self.num_tasks * self.make_family().horizon

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``family_args`` as a dict)."""
        fields = dataclasses.asdict(self)
        fields["family_args"] = dict(self.family_args)
        return fields

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> TrainConfig:
        fields = dict(fields)
        unknown = set(fields) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(sorted(unknown))}")
        fields["family_args"] = tuple(fields.get("family_args", {}).items())
        return cls(**fields)


def _frozen(value: Any) -> Any:
    """Lists (e.g. from JSON) and arrays become tuples, so family arguments stay hashable."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return tuple(_frozen(item) for item in value) if isinstance(value, list | tuple) else value
