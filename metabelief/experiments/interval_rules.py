"""Which interval each figure of ``results.json``'s ``summary`` gets (``metabelief.experiments.seeds``).

Every number is summarised by the mean over seeds and a 95% Student-t interval, but for two kinds
of figure, declared here by dotted key path patterns of a seed entry (``fnmatch``: ``*`` matches
across dots; a list's elements have the list's path):

* ``SUPPORTS``: figures bounded by definition, whose t interval can leave their support when the
  seeds spread or pile up at a bound. They get the expanded percentile bootstrap over seeds,
  which stays between the smallest and the largest seed. R² (<= 1; an untrained network's or a
  refit's may be below 0); state dissimilarities and |Δ return| (>= 0); total variations and
  stay probabilities (in [0, 1]); mean squared errors and log-losses (>= 0).
* ``TASK_ERROR``: the "% of the way" return fractions. Every seed's agent and every reference
  policy play the same held-out tasks, so the tasks' sampling error (and the references' Monte
  Carlo error) is one draw shared by all seeds and does not shrink with them; each seed entry
  holds the fraction's standard error over the tasks as ``<key>_se``
  (``metabelief.experiments.fractions``) and the interval adds it to the t interval's.

Differences of figures (``headline``, ``excess``), slopes, log-odds and returns keep the t interval.
"""

from __future__ import annotations

from collections.abc import Sequence

from metabelief.experiments import seeds

R2 = (None, 1.0)
NON_NEGATIVE = (0.0, None)
PROBABILITY = (0.0, 1.0)

SUPPORTS: dict[str, seeds.Support] = {
    # probing.ProbeReport, controls.ProbeControls, intervention, counterfactual: R² of probes
    "*.r2": R2,
    "*.r2_per_dim": R2,
    "*.r2_by_time": R2,
    "*.r2_posterior_mean": R2,
    "*.r2_all": R2,
    "*.read_out_r2": R2,
    "*.read_out_r2_target": R2,
    "probe.controls.per_dimension.*": R2,
    "probe.controls.*.per_dimension": R2,
    "probe.controls.mlp.*": R2,
    # errors: probes' MSE, decoding the truth, next-outcome log-loss (its excess is a difference)
    "*.mse": NON_NEGATIVE,
    "*.mse_per_dim": NON_NEGATIVE,
    "*.truth_mse": NON_NEGATIVE,
    "probe.controls.truth.*": NON_NEGATIVE,
    "probe.controls.next_outcome.exact": NON_NEGATIVE,
    "probe.controls.next_outcome.no_history": NON_NEGATIVE,
    "probe.controls.next_outcome.log_loss.*": NON_NEGATIVE,
    # analysis.state_machine.Simulation: dissimilarities (the excess over the floor is a difference)
    "state_machine.*.state_dissimilarity": NON_NEGATIVE,
    "state_machine.*.state_dissimilarity_uncentred": NON_NEGATIVE,
    "state_machine.*.total_variation.mapped": PROBABILITY,
    "state_machine.*.total_variation.floor": PROBABILITY,
    "state_machine.*.total_variation.random": PROBABILITY,
    "state_machine.*.total_variation.normalised": NON_NEGATIVE,
    "state_machine.*.return_difference*.mapped": NON_NEGATIVE,
    "state_machine.*.return_difference*.floor": NON_NEGATIVE,
    "state_machine.*.return_difference*.random": NON_NEGATIVE,
    "state_machine.*.return_difference*.normalised": NON_NEGATIVE,
    # train.dynamics: the evaluations during training (results.SeedDynamics)
    "train.dynamics.series.r2_*": R2,
    "train.dynamics.series.dissimilarity_*": NON_NEGATIVE,
    # two_step.StayFigures: P(stay) after each kind of trial
    "stay.*.probs": PROBABILITY,
}

TASK_ERROR: tuple[str, ...] = (
    "return_fraction_random_to_thompson",  # bandit
    "return_fraction_random_to_bayes_optimal",  # bandit (exact anchors: the agent's task error)
    "return_fraction_random_to_belief_greedy",  # gridworld
    "return_fraction_random_to_reference",  # family
)


def summarize(entries: Sequence[dict]) -> dict:
    """The ``summary`` of seed entries (``to_dict()`` less ``seed``) with the rules above."""
    return seeds.summarize(entries, SUPPORTS, TASK_ERROR)
