"""Hypothesis profiles of the conformance suite, and the settings its tests run under.

* ``ci`` (the default): derandomized, no example database, no deadline (JIT compiles
  and first calls are slow), ``CI_MAX_EXAMPLES`` examples per property and backend.
  Every property and backend draws from the one seed ``CI_SEED``, so they all see the
  same configurations, run after run; besides making backends comparable, this lets
  JAX reuse what it compiled for a shape in one property in the next.
* ``thorough``: random seeds, ``THOROUGH_MAX_EXAMPLES`` examples per property.

Selected with Hypothesis's own ``--hypothesis-profile NAME`` option, else the
environment variable ``SGCONV_HYPOTHESIS_PROFILE``, else ``ci``.  The conformance tests
take their settings from the selected profile explicitly (``conformance_settings``), so
choosing one never changes the Hypothesis settings of other test directories.
"""

from __future__ import annotations

import math
import os

from hypothesis import HealthCheck, seed, settings

__all__ = ["CI_MAX_EXAMPLES", "THOROUGH_MAX_EXAMPLES", "CI_SEED", "ENV_VAR", "activate",
           "active_name", "conformance_settings", "conformance_test"]

CI_MAX_EXAMPLES = 20
CI_SEED = 2210_09298  # the paper's arXiv number
THOROUGH_MAX_EXAMPLES = 400
ENV_VAR = "SGCONV_HYPOTHESIS_PROFILE"

_COMMON = dict(database=None, deadline=None, print_blob=True,
               suppress_health_check=(HealthCheck.too_slow,))
settings.register_profile("ci", max_examples=CI_MAX_EXAMPLES, derandomize=True, **_COMMON)
settings.register_profile("thorough", max_examples=THOROUGH_MAX_EXAMPLES, derandomize=False,
                          **_COMMON)

_active = [os.environ.get(ENV_VAR, "").strip() or "ci"]


def activate(name: str) -> None:
    """Make ``name`` the profile of the conformance tests (must be registered)."""
    settings.get_profile(name)  # raises InvalidArgument naming the registered profiles
    _active[0] = name


def active_name() -> str:
    return _active[0]


def conformance_settings(scale: float = 1.0, **overrides) -> settings:
    """Settings from the active profile; ``scale`` multiplies max_examples (for costly
    properties), keeping at least one example."""
    parent = settings.get_profile(_active[0])
    overrides.setdefault("max_examples", max(1, math.ceil(parent.max_examples * scale)))
    return settings(parent, **overrides)


def conformance_test(scale: float = 1.0):
    """Decorator for a conformance property test: the active profile's settings (see
    :func:`conformance_settings`) and, for a derandomized profile, the shared ``CI_SEED``."""
    def decorate(test):
        test = conformance_settings(scale)(test)
        if settings.get_profile(_active[0]).derandomize:
            test = seed(CI_SEED)(test)
        return test
    return decorate
