"""Fixtures shared across the test suite."""

import importlib.metadata
import os

# The suite's shapes are tiny, so its time goes to XLA compiling, not running, programs: skip the
# backend's expensive optimisation passes (about 20% off the experiment smoke tests on CPU), and
# emit fused loops with XLA's older elemental emitters instead of its MLIR fusion emitters (the
# A2C chunk of a tiny GRU and LSTM compiles in 3.2 s of CPU instead of 7.7 s), and generate each
# program's code in one piece, not split for parallel threads (the two xdist workers already keep
# both cores busy; 10% less CPU on the own-family run). Set before any JAX backend starts;
# subprocesses (the sharding test) inherit it. XLA aborts on a flag it does not know, so the two
# CPU-emitter flags are given only to the jaxlib they were measured on (0.10, what PyPI serves
# CI today): a newer one runs the suite without them, slower rather than not at all.
EMITTER_FLAGS_TESTED_ON = "0.10."
XLA_TEST_FLAGS = ["--xla_backend_optimization_level=0"]
if importlib.metadata.version("jaxlib").startswith(EMITTER_FLAGS_TESTED_ON):
    XLA_TEST_FLAGS += ["--xla_cpu_use_fusion_emitters=false", "--xla_cpu_parallel_codegen_split_count=1"]
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *XLA_TEST_FLAGS]).strip()

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from metabelief.tasks import registry  # noqa: E402

# Hypothesis: in CI (``CI`` set, as on every hosted runner) a fixed, derandomised set of examples,
# so a red build reproduces and a green one stays green; locally fresh random examples, a few more
# of them, to keep looking for new failures. ``HYPOTHESIS_PROFILE`` picks one explicitly. Deadlines
# are off in both: the first example of a test pays for XLA compiling its jitted function.
_defaults = settings.get_profile("default")  # not Hypothesis's own "ci" profile, which it loads under CI
settings.register_profile(
    "ci", _defaults, derandomize=True, max_examples=25, deadline=None, database=None, print_blob=True
)
settings.register_profile("dev", _defaults, max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def clean_registry():
    """Lets a test register families; the registry is restored afterwards."""
    before = dict(registry._FACTORIES)
    yield
    registry._FACTORIES.clear()
    registry._FACTORIES.update(before)


@pytest.fixture(autouse=True, scope="module")
def _fresh_compilation_caches():
    """Drops JAX's compiled programs after each test module. One process compiling the whole
    suite's programs (thousands) crashed inside XLA's CPU compiler (a segfault in
    ``backend_compile_and_load``, always at the same late test, which passes on its own); starting
    each module with empty caches avoids it, at the price of some recompilation."""
    yield
    jax.clear_caches()


# Files that each take a minute or more on one core (measured with --durations): run first, so
# that the two workers of ``--dist loadfile`` (each takes the next whole file when it is free)
# end together instead of one waiting on a long file handed out last.
SLOW_FILES_FIRST = (
    "tests/test_cli.py",
    "tests/test_own_family_end_to_end.py",
    "tests/test_own_agent_end_to_end.py",
    "tests/test_readme.py",
    "tests/test_sharding.py",
    "tests/test_bench.py",
    "tests/test_multiprocess.py",
)


def pytest_collection_modifyitems(config, items):
    """Stable-sorts the collected tests so that the files of ``SLOW_FILES_FIRST`` come first, in
    that order; every other file keeps its place after them."""
    del config
    rank = {path: index for index, path in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
