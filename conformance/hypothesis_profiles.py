"""Hypothesis profiles of the conformance suite, and the decorator its property tests use.

* ``ci`` (the default): no generated draws at all.  Every property runs the explicit
  examples: the boundary cases of :data:`~conformance.examples.PINNED`, then a prefix of
  the stratified CI design (:func:`~conformance.examples.design`) whose length depends on
  the backend's framework (:data:`CI_DESIGN_ROWS`: the cheap NumPy backend gets the most).
  Generated draws would make CI coverage hang on luck: Hypothesis mixes numeric literals
  it finds in every loaded module of the project into its draws, so an unrelated
  constant added anywhere in sgconv, or a different set of imported backends, changes
  which configurations a derandomized run covers (11 of 20 draws changed when one
  module with new literals was imported; conformance/README.md); the ``ci`` draws were
  also bunched (2 of 20 in float64, runs of near-duplicates).  The design is fixed by its
  construction, whatever the Hypothesis version or import order.
* ``thorough``: the same explicit examples (every design row on every backend), then
  ``THOROUGH_MAX_EXAMPLES`` random draws per property, shrunk on failure.

Selected with Hypothesis's own ``--hypothesis-profile NAME`` option, else the
environment variable ``SGCONV_HYPOTHESIS_PROFILE``, else ``ci``.  The conformance tests
take their settings from the selected profile explicitly (:func:`conformance_test`), so
choosing one never changes the Hypothesis settings of other test directories.
"""

from __future__ import annotations

import functools
import math
import os

from hypothesis import HealthCheck, Phase, example, given, reject, seed, settings

from .examples import DESIGN_SEED, PINNED, design, design_rank, examples

__all__ = ["CI_DESIGN_ROWS", "CI_DESIGN_ROWS_DEFAULT", "DESIGN_ROWS", "THOROUGH_MAX_EXAMPLES",
           "CI_SEED", "ENV_VAR", "activate", "active_name", "describe", "design_budget",
           "conformance_test"]

#: Design rows each property runs per backend in the ``ci`` profile, by the backend's array
#: framework (the pinned examples come on top).  NumPy is cheap; JAX compiles every
#: operation for each new shape on first use.
CI_DESIGN_ROWS = {"numpy": 40, "torch": 20, "jax": 10}
#: ... for any other framework (CuPy, a third-party backend).
CI_DESIGN_ROWS_DEFAULT = 15
#: The design's length: every row runs in the ``thorough`` profile.
DESIGN_ROWS = max(CI_DESIGN_ROWS.values())
THOROUGH_MAX_EXAMPLES = 400
CI_SEED = DESIGN_SEED  # used only when a profile generates draws
ENV_VAR = "SGCONV_HYPOTHESIS_PROFILE"

_COMMON = dict(database=None, deadline=None, print_blob=True,
               suppress_health_check=(HealthCheck.too_slow,))
# Both profiles name their parent: Hypothesis loads its own ``ci`` profile when it sees a CI
# environment (``CI=true``), and a profile registered without a parent inherits whatever is
# loaded, so ``thorough`` would silently lose its generate phase on a CI machine.
_BASE = settings.get_profile("default")
settings.register_profile("ci", parent=_BASE, phases=(Phase.explicit,), derandomize=True,
                          report_multiple_bugs=False, **_COMMON)
settings.register_profile("thorough", parent=_BASE, phases=tuple(Phase),
                          max_examples=THOROUGH_MAX_EXAMPLES, derandomize=False, **_COMMON)

_active = [os.environ.get(ENV_VAR, "").strip() or "ci"]


def activate(name: str) -> None:
    """Make ``name`` the profile of the conformance tests (must be registered)."""
    settings.get_profile(name)  # raises InvalidArgument naming the registered profiles
    _active[0] = name


def active_name() -> str:
    return _active[0]


def describe() -> str:
    """The active profile in one line (the report header)."""
    name = _active[0]
    rows = ", ".join(f"{fw} {n}" for fw, n in CI_DESIGN_ROWS.items())
    explicit = f"{len(PINNED)} pinned examples + design rows per property"
    if Phase.generate not in settings.get_profile(name).phases:
        return (f"{name} ({explicit}: {rows}, others {CI_DESIGN_ROWS_DEFAULT}; "
                f"no random draws)")
    return (f"{name} ({explicit}: all {DESIGN_ROWS}; then max_examples="
            f"{settings.get_profile(name).max_examples} random draws)")


def design_budget(backend_name: str, scale: float = 1.0, profile: str | None = None) -> int:
    """How many design rows a property runs on ``backend_name`` under ``profile``."""
    profile = profile or _active[0]
    if Phase.generate in settings.get_profile(profile).phases:
        return DESIGN_ROWS
    from . import frameworks                        # imports the backend's framework
    import sgconv
    rows = CI_DESIGN_ROWS.get(frameworks.framework_of(sgconv.backend(backend_name)),
                              CI_DESIGN_ROWS_DEFAULT)
    return max(1, math.ceil(rows * scale))


def conformance_test(scale: float = 1.0, profile: str | None = None, *, two_d: bool = False,
                     **space):
    """Decorator: ``fn(backend_name, ex)`` becomes the property test over ``space``.

    Runs PINNED and the design rows over ``space`` as explicit examples (each backend
    only its :func:`design_budget`; ``scale`` shrinks it for costly properties), then,
    in a profile that generates draws, ``max_examples * scale`` draws of
    ``examples(**space)``.  ``profile``: the active one by default.  ``two_d``: the 2D
    suite's examples (:mod:`conformance.examples2d`: PINNED2D, design2d, examples2d).
    """
    profile = profile or _active[0]
    parent = settings.get_profile(profile)
    if two_d:
        from . import examples2d as e2
        pinned, rows, rank_of, strategy = e2.PINNED2D, e2.design2d, e2.design_rank2d, e2.examples2d
    else:
        pinned, rows, rank_of, strategy = PINNED, design, design_rank, examples

    def decorate(fn):
        @functools.wraps(fn)
        def body(backend_name, ex):
            rank = rank_of(ex)
            if rank is not None and ex not in pinned and \
                    rank >= design_budget(backend_name, scale, profile):
                reject()                            # beyond this backend's share of the design
            fn(backend_name, ex)

        test = given(ex=strategy(**space))(body)
        for ex in reversed(pinned + tuple(rows(DESIGN_ROWS, **space))):
            test = example(ex=ex)(test)             # run in this order
        test = settings(parent, max_examples=max(1, math.ceil(parent.max_examples * scale)))(test)
        if parent.derandomize:
            test = seed(CI_SEED)(test)
        return test
    return decorate
