"""metabelief: exact beliefs for recurrent meta-RL agents, in JAX.

The public surface::

    family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=100)
    metabelief.register("my_family", MyFamily)
    metabelief.families()
    metabelief.testing.check_family(family)
"""

from metabelief import tasks, testing
from metabelief.tasks import TaskFamily, families, make, register

__version__ = "0.1.0"

__all__ = ["TaskFamily", "families", "make", "register", "tasks", "testing", "__version__"]
