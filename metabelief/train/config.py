"""The training configuration: one frozen dataclass from which every size is derived."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from metabelief.agents.base import Agent, check_agent
from metabelief.agents.registry import CELLS, agent_for
from metabelief.tasks import registry
from metabelief.tasks.base import TaskFamily
from metabelief.tasks.validation import (
    boolean,
    integer_at_least,
    non_negative_float,
    positive_float,
    probability,
)

SEED_LIMIT = 2**32  # seeds become uint32 PRNG keys: every seed of a population must lie below this
ALGORITHMS = ("a2c", "ppo")
# What an unset learning_rate or num_updates becomes, per algorithm (both annealed to 0, 1,024 tasks
# per update), measured on the 2-armed Bernoulli bandit of horizon 100 (Thompson returns ~63.5):
# A2C at 5e-3 is the experiments' setting (seeds 0-4 at 94-103% of the way from random to Thompson
# after 600 updates; Wang et al.'s 7e-4 had not moved off random in 100 updates with these batches,
# and the former defaults, 7e-4 constant, reached 57.3 after 200). PPO at 1e-3 (4 epochs x 4
# minibatches) reached 63.7 and 63.9 on two seeds after 150 updates of 512 tasks; at 3e-3 64.0 and
# 64.3 (benchmarks/NOTES.md).
DEFAULTS = {
    "a2c": {"learning_rate": 5e-3, "num_updates": 600},
    "ppo": {"learning_rate": 1e-3, "num_updates": 150},
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """An agent trained on a task family, one full episode of fresh tasks per update.

    The agent is the built-in memory model ``cell`` (``metabelief.agents.CELLS``: ``lstm``,
    ``gru``, ``rnn``, ``lru`` or ``oracle``, of ``hidden_size`` units), or ``agent``, any object
    meeting the agent protocol (``metabelief.agents.base``; hashable), e.g. your own network.
    ``algorithm`` is ``"a2c"`` (Wang et al. 2016, ``metabelief.train.a2c``) or ``"ppo"`` (recurrent
    PPO, ``metabelief.train.ppo``: ``ppo_epochs`` passes over each batch in ``ppo_minibatches``
    minibatches of whole episodes, ratio clipped at ``1 +- ppo_clip``, GAE(``gae_lambda``)).
    ``predictive_coef`` > 0 adds the predictive objective (``metabelief.train.predictive``).

    ``family`` is a registered family name, with ``family_args`` its keyword arguments as
    ``(name, value)`` pairs, so the config stays hashable and can be a static jit argument; or a
    family instance (e.g. your own frozen dataclass, registered or not; subclassing ``TaskFamily``
    is optional) with no ``family_args``. The instance must be hashable; ``make_family()``
    returns it as it is.

    ``to_dict()`` records an instance through ``metabelief.tasks.registry.family_spec`` (its class
    and fields); ``from_dict`` rebuilds it from there or takes it back as ``family=``.
    """

    family: str | TaskFamily = "bernoulli_bandit"
    family_args: tuple[tuple[str, Any], ...] = ()
    cell: str = "lstm"
    agent: Agent | None = None  # your own agent instead of the built-in cell (then cell is ignored)
    hidden_size: int = 48
    time_input: bool = False
    algorithm: str = "a2c"
    predictive_coef: float = 0.0  # weight of the next-reward (and -observation) prediction loss
    ppo_clip: float = 0.2
    gae_lambda: float = 0.95  # PPO's GAE(lambda); A2C uses the full Monte-Carlo return (lambda = 1)
    ppo_epochs: int = 4
    ppo_minibatches: int = 4  # minibatches of whole episodes (tasks) per epoch
    num_tasks: int = 1024  # tasks (episodes) per update
    num_updates: int | None = None  # None: the algorithm's default (DEFAULTS)
    updates_per_chunk: int = 20  # updates per jitted call between progress-bar refreshes
    checkpoints: int = 0  # evaluations during training (metabelief.train.dynamics), 0: none, else >= 2
    learning_rate: float | None = None  # None: the algorithm's default (DEFAULTS)
    anneal_learning_rate: bool = True  # decay linearly to 0 over the updates (purejaxrl's ANNEAL_LR)
    max_grad_norm: float = 1.0
    gamma: float = 0.9
    value_coef: float = 0.05
    entropy_coef: float = 0.05
    seed: int = 0  # the first seed: seed i of the population is seed + i
    num_seeds: int = 1  # independent agents trained together, one vmapped axis (own init, tasks, actions)
    devices: int | None = 1  # devices each update's tasks are spread over, None: all (metabelief.sharding)

    def __post_init__(self):
        # Each check stores the value it returns, so numpy scalars become plain Python numbers.
        def checked(name, check, *args):
            object.__setattr__(self, name, check(name, getattr(self, name), *args))

        if not (isinstance(self.family, str) or registry.is_family(self.family)):
            raise ValueError(
                "family must be a registered family name (a str) or a task family instance (a "
                f"TaskFamily, or any object with its sizes and methods), got {self.family!r}"
            )
        object.__setattr__(self, "family_args", _family_args(self.family_args))
        if not isinstance(self.family, str):
            if self.family_args:
                raise ValueError(
                    f"family_args must be empty when family is an instance (its fields are its "
                    f"arguments), got {dict(self.family_args)} with family {self.family!r}"
                )
            try:
                hash(self.family)
            except Exception as error:
                raise ValueError(
                    f"family must be hashable (the config is a static jit argument; a frozen dataclass "
                    f"with hashable fields is), got {self.family!r}: {error}"
                ) from None
        if not (isinstance(self.algorithm, str) and self.algorithm in ALGORITHMS):
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        for name, default in DEFAULTS[self.algorithm].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        for name in ("num_tasks", "num_updates", "updates_per_chunk", "hidden_size", "num_seeds"):
            checked(name, integer_at_least, 1)
        if self.agent is None and not (isinstance(self.cell, str) and self.cell in CELLS):
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.agent is not None:
            check_agent(self.agent)
        checked("checkpoints", integer_at_least, 0)
        if self.checkpoints == 1:
            raise ValueError("checkpoints must be 0 (no evaluation during training) or >= 2, got 1")
        checked("predictive_coef", non_negative_float)
        checked("ppo_clip", positive_float)
        checked("gae_lambda", probability)
        for name in ("ppo_epochs", "ppo_minibatches"):
            checked(name, integer_at_least, 1)
        if self.algorithm == "ppo" and self.num_tasks % self.ppo_minibatches:
            raise ValueError(
                f"num_tasks ({self.num_tasks}) must be divisible by ppo_minibatches ({self.ppo_minibatches})"
            )
        if self.predictive_coef > 0 and self.agent is not None and not hasattr(self.agent, "predict"):
            raise ValueError(
                "predictive_coef > 0 needs an agent with a predict(params, readout, actions) head; "
                f"{type(self.agent).__qualname__} has none"
            )
        checked("seed", integer_at_least, 0)
        if self.seed + self.num_seeds > SEED_LIMIT:
            raise ValueError(
                f"seed + num_seeds must be <= 2**32 (each seed becomes a uint32 key), got "
                f"seed={self.seed}, num_seeds={self.num_seeds}"
            )
        if self.devices is not None:
            checked("devices", integer_at_least, 1)
            if self.num_tasks % self.devices:
                raise ValueError(
                    f"num_tasks ({self.num_tasks}) must be divisible by devices ({self.devices})"
                )
        for name in ("time_input", "anneal_learning_rate"):
            checked(name, boolean)
        for name in ("learning_rate", "max_grad_norm"):
            checked(name, positive_float)
        checked("gamma", probability)
        for name in ("value_coef", "entropy_coef"):
            checked(name, non_negative_float)
        try:  # an unknown family or bad family argument fails here, before any jit
            self.make_family()
        except TypeError as error:  # e.g. a factory called with an argument of the wrong kind
            raise ValueError(f"family_args do not fit family {self.family!r}: {error}") from error

    def make_family(self) -> TaskFamily:
        """The family: the instance itself, or the registered one built with ``family_args``."""
        if not isinstance(self.family, str):
            return self.family
        return registry.make(self.family, **dict(self.family_args))

    @property
    def family_name(self) -> str:
        """A printable name of the family: the registered name, or the instance's class name."""
        return self.family if isinstance(self.family, str) else type(self.family).__qualname__

    def make_agent(self) -> Agent:
        """``agent`` if given, else the built-in ``cell`` sized for the family."""
        if self.agent is not None:
            return self.agent
        return agent_for(
            self.make_family(),
            hidden_size=self.hidden_size,
            time_input=self.time_input,
            cell=self.cell,
            predictive=self.predictive_coef > 0,
        )

    @property
    def agent_name(self) -> str:
        """A printable name of the agent: the cell, or your agent's class name."""
        return self.cell if self.agent is None else type(self.agent).__qualname__

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seed of each agent of the population, in order."""
        return tuple(range(self.seed, self.seed + self.num_seeds))

    def for_seed(self, index: int) -> TrainConfig:
        """The one-seed config that trains agent ``index`` of this population (to float rounding)."""
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
        """JSON-ready fields: ``family_args`` as a dict, a family instance as its
        ``registry.family_spec`` (``{"class": ..., "fields": {...}, "rebuildable": ...}``)."""
        fields = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        fields["family"] = registry.family_spec(self.family)
        fields["family_args"] = dict(self.family_args)
        fields["agent"] = None if self.agent is None else {"class": registry.class_path(type(self.agent))}
        return fields

    @classmethod
    def from_dict(
        cls, fields: Mapping[str, Any], family: TaskFamily | None = None, agent: Agent | None = None
    ) -> TrainConfig:
        """The config ``to_dict`` gave (also after a JSON round trip).

        Args:
          fields: ``to_dict()``'s fields; missing ones take their defaults.
          family: the family instance, for a config saved with one: checked against the record
            (class and fields) and used as it is. Without it the instance is rebuilt from the
            record (``registry.family_from_spec``), which needs its class importable by name;
            a ValueError says when it is not. For a registered name, it must equal the family
            that name and ``family_args`` build.
          agent: your own agent, for a config saved with one (recorded by class only, it cannot be
            rebuilt): checked against the recorded class and used as it is. A built-in ``cell``
            is rebuilt from its name.
        """
        if not isinstance(fields, Mapping):
            raise ValueError(f"fields must be a dict of TrainConfig fields, got {fields!r}")
        unknown = set(fields) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(sorted(map(str, unknown)))}")
        if family is not None and not registry.is_family(family):
            raise ValueError(f"family must be a task family instance or None, got {family!r}")
        fields = {**fields, "agent": _recorded_agent(fields.get("agent"), agent)}
        spec = fields.get("family", cls.family)
        if isinstance(spec, str):
            config = cls(**fields)  # family_args may be a dict: __post_init__ takes its items
            if family is not None and family != config.make_family():
                raise ValueError(
                    f"family {family!r} does not match the recorded family {spec!r} with family_args "
                    f"{dict(config.family_args)}, which builds {config.make_family()!r}"
                )
            return config
        if not isinstance(spec, Mapping):
            raise ValueError(f"family must be a registered family name or a family record, got {spec!r}")
        return cls(**{**fields, "family": registry.family_from_spec(spec, family)})


def with_algorithm(config: TrainConfig, algorithm: str, *, keep_updates: bool = False) -> TrainConfig:
    """``config`` trained by ``algorithm`` instead, with that algorithm's learning rate and updates
    (``DEFAULTS``; the updates kept with ``keep_updates``): an experiment's settings are tuned for
    its own algorithm. The same config when ``algorithm`` is already its own."""
    if algorithm == config.algorithm:
        return config
    updates = config.num_updates if keep_updates else None  # None: the algorithm's, on construction
    return dataclasses.replace(config, algorithm=algorithm, learning_rate=None, num_updates=updates)


def _recorded_agent(record: Any, agent: Agent | None) -> Agent | None:
    """The agent of a saved config: None for a built-in cell, else ``agent``, checked against the
    recorded class."""
    if record is None:
        if agent is not None:
            raise ValueError(
                f"agent {type(agent).__qualname__} was given, but the config was saved with the built-in cell"
            )
        return None
    if not isinstance(record, Mapping) or not isinstance(record.get("class"), str):
        raise ValueError(f"agent must be recorded as None or {{'class': ...}}, got {record!r}")
    if agent is None:
        raise ValueError(
            f"the config was saved with your own agent {record['class']}, which cannot be rebuilt from "
            "its record: pass it back (e.g. load_agent(path, agent=...))"
        )
    if registry.class_path(type(agent)) != record["class"]:
        given = registry.class_path(type(agent))
        raise ValueError(f"agent {given} does not match the recorded agent class {record['class']}")
    return agent


def _family_args(pairs: Any) -> tuple[tuple[str, Any], ...]:
    """``family_args`` as sorted, hashable ``(name, value)`` pairs; a dict gives its items."""
    if isinstance(pairs, Mapping):
        pairs = tuple(pairs.items())
    if not isinstance(pairs, list | tuple) or not all(
        isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[0], str) for pair in pairs
    ):
        raise ValueError(f"family_args must be (name, value) pairs with str names, got {pairs!r}")
    names = [name for name, _ in pairs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"family_args give {', '.join(repeated)} more than once")
    frozen = tuple(
        sorted(((str(name), registry.hashable(value)) for name, value in pairs), key=lambda pair: pair[0])
    )
    for name, value in frozen:
        try:
            hash(value)
        except TypeError:
            raise ValueError(f"family_args value of {name} must be hashable, got {value!r}") from None
    return frozen
