"""pytest set-up shared by a checkout's test folders (tests/, reference/, conformance/).

Where CuPy cannot run (no GPU, CuPy not installed), every test that needs it is skipped here,
before its fixtures run, with one reason raised from one place, so that the summary of
``pytest -ra`` shows a single line for all of them instead of one per test function.  A test
needs CuPy when it asks for the ``cp`` fixture (tests/test_cupy.py, tests/test_interop.py) or is
a conformance test parametrized with ``backend_name='cupy'``.  The tests keep their own skips:
they still skip with the same reason when run without this file (``sgconv check`` runs the
installed suite).
"""

from __future__ import annotations

import functools

import pytest


@functools.lru_cache(maxsize=1)
def _cupy_unusable() -> str | None:
    """Why the cupy backend cannot run here, or None where it can."""
    import sgconv

    info = sgconv.available_backends()["cupy"]
    return None if info.usable else info.reason


def _needs_cupy(item) -> bool:
    callspec = getattr(item, "callspec", None)
    return ("cp" in getattr(item, "fixturenames", ())
            or (callspec is not None and callspec.params.get("backend_name") == "cupy"))


def _reason() -> str | None:
    why = _cupy_unusable()
    return None if why is None else f"CuPy tests: the cupy backend cannot run here: {why}"


@pytest.hookimpl(tryfirst=True)  # before the skip marks that pytest evaluates per test
def pytest_runtest_setup(item):
    if _needs_cupy(item) and _reason() is not None:
        pytest.skip(_reason())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """pytest folds skips by (file, line, reason), but those of tests that carry a skip mark
    (the conformance suite marks an unusable backend's tests) by (file, reason): drop that
    keyword from the report of this file's skip, so that all of them fold into one line."""
    report = yield
    if report.skipped and call.when == "setup" and _needs_cupy(item) and _reason() is not None:
        report.keywords.pop("skip", None)
    return report
