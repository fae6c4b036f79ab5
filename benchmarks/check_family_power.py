"""False-alarm rate and power of ``check_family``'s calibration checks (7: mean, 8: second moment).

For every family below, ``--seeds`` independent keys each draw a fresh batch of tasks and a fresh
random rollout at ``check_family``'s default sizes (2,048 tasks, min(horizon, 100) steps), and
run the calibration checks on it exactly as ``check_family`` does (same statistics, same
Bonferroni bound over both checks at ``false_alarm_rate`` 1e-4). The rollout is compiled once per
family; only the key changes between seeds.

Why the calibration checks and not the whole ``check_family``: checks 1-6 test exact properties
(sizes, shapes, trace counts, vmap == loop and bit-identical reruns, ``done`` at the horizon,
finite beliefs, posterior means inside the truth's range with 5% slack): for a correct family
they hold for every key, so they contribute no false alarms, while they cost most of
``check_family``'s time (compiling). ``--whole`` runs the whole ``check_family`` on a few keys
of each exact family as a spot check of that claim.

Families: exact ones (a Beta bandit reporting its variance, so check 8 tests a continuous truth;
``two_step``, whose 0/1 truth is tested against m (1 - m)) and broken ones with the right
structure: a wrong prior (wrong mean) and right means with a wrong variance (too confident,
too unsure).

Columns: keys; rejections by check 7 and by check 8 (each on its own); rejections by either (what
``check_family`` does); their rate with a 95% Clopper-Pearson interval; the largest z over the
tests divided by the Bonferroni bound (median and worst over the keys: how much room an exact
family leaves); seconds per key.

Usage: ``python benchmarks/check_family_power.py [--seeds 200] [--exact-seeds 500] [--whole 2]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats as scipy_stats

import metabelief
from metabelief.rollout import sample_tasks
from metabelief.tasks import BernoulliBandit, BetaBelief
from metabelief.testing import calibration, check_family, random_rollout  # the kit this benchmark measures

NUM_TASKS = 2048  # check_family's defaults
FALSE_ALARM_RATE = 1e-4


def beta_variance(alpha, beta):
    total = alpha + beta
    return alpha * beta / (total * total * (total + 1.0))


@dataclasses.dataclass(frozen=True)
class BernoulliWithVariance(BernoulliBandit):
    """The exact Beta bandit, declaring its posterior variance (optionally scaled: a broken one)."""

    variance_scale: float = 1.0

    def belief_variance(self, belief: BetaBelief) -> jax.Array:
        return self.variance_scale * beta_variance(belief.alpha, belief.beta)


@dataclasses.dataclass(frozen=True)
class WrongPrior(BernoulliWithVariance):
    """Counts from Beta(2, 2) for tasks drawn from Beta(1, 1): the prior mean is right, its spread
    (so every later mean) wrong; the variance is that belief's own."""

    def belief_init(self, obs):
        return BetaBelief(alpha=jnp.full(self.num_arms, 2.0), beta=jnp.full(self.num_arms, 2.0))


@dataclasses.dataclass(frozen=True)
class PriorSpreadForever(BernoulliWithVariance):
    """Right means; the variance stays the prior's (too unsure)."""

    def belief_variance(self, belief):
        prior = jnp.ones_like(belief.alpha)
        return beta_variance(prior * self.prior_a, prior * self.prior_b)


FAMILIES = [  # (label, family, exact?)
    ("bernoulli_bandit + belief_variance", BernoulliWithVariance(), True),
    ("two_step (0/1 truth)", metabelief.make("two_step"), True),
    ("gridworld (0/1 truth, 24 goals)", metabelief.make("gridworld"), True),
    ("wrong prior Beta(2,2) [mean]", WrongPrior(), False),
    ("std x 0.5 [variance]", BernoulliWithVariance(variance_scale=0.5**2), False),
    ("std x 0.95 [variance]", BernoulliWithVariance(variance_scale=0.95**2), False),
    ("std x 1.05 [variance]", BernoulliWithVariance(variance_scale=1.05**2), False),
    ("std x 1.2 [variance]", BernoulliWithVariance(variance_scale=1.2**2), False),
    ("prior's std forever [variance]", PriorSpreadForever(), False),
]


def compiled_sample(family):
    """``key -> (rollout, variance or None)`` at check_family's sizes, compiled once."""
    reports = calibration.reports_variance(family)
    recorded = calibration.with_variance_features(family, jax.random.key(0)) if reports else family
    steps = min(family.horizon, 100)

    @jax.jit
    def run(key):
        task_key, rollout_key = jax.random.split(key)
        tasks = sample_tasks(family, task_key, NUM_TASKS)
        return random_rollout(recorded, rollout_key, tasks, steps)

    def sample(key):
        data = jax.device_get(run(key))
        return calibration.split_variance_features(data) if reports else (data, None)

    return sample


def interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact binomial) interval for a rate."""
    alpha = 1.0 - level
    beta = scipy_stats.beta
    low = 0.0 if successes == 0 else beta.ppf(alpha / 2, successes, trials - successes + 1)
    high = 1.0 if successes == trials else beta.ppf(1 - alpha / 2, successes + 1, trials - successes)
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200, help="keys per broken family")
    parser.add_argument("--exact-seeds", type=int, default=500, help="keys per exact family")
    parser.add_argument("--whole", type=int, default=2, help="whole check_family runs per exact family")
    args = parser.parse_args()
    start = time.perf_counter()
    print(
        f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; {NUM_TASKS} tasks x min(horizon, 100) "
        f"steps per seed, false_alarm_rate {FALSE_ALARM_RATE:g}\n"
    )
    header = (
        f"{'family':34} {'seeds':>5} {'rej 7':>6} {'rej 8':>6} {'rejected':>8} {'rate':>6}  "
        f"{'95% CI (Clopper-Pearson)':>24}  {'max z / bound: median, max':>27}  {'s/seed':>6}"
    )
    print(header)
    print("-" * len(header))
    for label, family, exact in FAMILIES:
        num_seeds = args.exact_seeds if exact else args.seeds
        sample = compiled_sample(family)
        sample(jax.random.key(0))  # compile outside the timing
        family_start = time.perf_counter()
        rejected_mean = rejected_second = rejected = 0
        ratios = []
        for seed in range(num_seeds):
            data, variance = sample(jax.random.fold_in(jax.random.key(20261127), seed))
            result = calibration.calibration_statistics(family, data, FALSE_ALARM_RATE, variance)
            mean_fails = result.mean[0] > result.z_threshold
            second_fails = result.second_moment[0] > result.z_threshold
            rejected_mean += mean_fails
            rejected_second += second_fails
            rejected += mean_fails or second_fails
            ratios.append(max(result.mean[0], result.second_moment[0]) / result.z_threshold)
        low, high = interval(rejected, num_seeds)
        seconds = (time.perf_counter() - family_start) / num_seeds
        print(
            f"{label:34} {num_seeds:5d} {rejected_mean:6d} {rejected_second:6d} {rejected:8d} "
            f"{rejected / num_seeds:6.4f}  {f'[{low:.4f}, {high:.4f}]':>24}  "
            f"{f'{np.median(ratios):.2f}, {np.max(ratios):.2f}':>27}  {seconds:6.2f}",
            flush=True,
        )

    if args.whole:
        print(f"\nwhole check_family, {args.whole} keys per exact family:")
        for label, family, exact in FAMILIES:
            if not exact:
                continue
            for seed in range(args.whole):
                whole_start = time.perf_counter()
                report = check_family(family, key=jax.random.key(1000 + seed))
                print(
                    f"  {label} key {1000 + seed}: passed in {time.perf_counter() - whole_start:.1f} s, "
                    f"max z {report.calibration_max_z:.2f} < {report.z_threshold:.2f} over "
                    f"{report.calibration_groups} tests ({report.second_moment_groups} of the second moment)"
                )
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
