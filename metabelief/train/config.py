"""The training configuration: one frozen dataclass from which every size is derived."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from metabelief.agents.lstm import RecurrentAgent, agent_for
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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A2C on a task family, one full episode of fresh tasks per update (Wang et al. 2016).

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
    hidden_size: int = 48
    time_input: bool = False
    num_tasks: int = 2048  # tasks (episodes) per update
    num_updates: int = 400
    updates_per_chunk: int = 20  # updates per jitted call between progress-bar refreshes
    learning_rate: float = 7e-4
    anneal_learning_rate: bool = False  # decay linearly to 0 over the updates (purejaxrl's ANNEAL_LR)
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
        for name in ("num_tasks", "num_updates", "updates_per_chunk", "hidden_size", "num_seeds"):
            checked(name, integer_at_least, 1)
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

    def make_agent(self) -> RecurrentAgent:
        return agent_for(self.make_family(), hidden_size=self.hidden_size, time_input=self.time_input)

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
        return fields

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any], family: TaskFamily | None = None) -> TrainConfig:
        """The config ``to_dict`` gave (also after a JSON round trip).

        Args:
          fields: ``to_dict()``'s fields; missing ones take their defaults.
          family: the family instance, for a config saved with one: checked against the record
            (class and fields) and used as it is. Without it the instance is rebuilt from the
            record (``registry.family_from_spec``), which needs its class importable by name;
            a ValueError says when it is not. For a registered name, it must equal the family
            that name and ``family_args`` build.
        """
        if not isinstance(fields, Mapping):
            raise ValueError(f"fields must be a dict of TrainConfig fields, got {fields!r}")
        unknown = set(fields) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(sorted(map(str, unknown)))}")
        if family is not None and not registry.is_family(family):
            raise ValueError(f"family must be a task family instance or None, got {family!r}")
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
