"""pytest set-up of the conformance suite: which backends are checked, the Hypothesis profile,
and the report header.

* ``--backend NAME`` (repeatable, or comma-separated; else ``$SGCONV_TEST_BACKEND``) checks
  only those backends; by default every name in ``sgconv.known_backends()``.
* A backend that cannot run here (``available_backends()[name].usable`` is False) is
  reported as skipped with its reason, never as passed.
* ``--backend-plugin MODULE`` (repeatable; else ``$SGCONV_TEST_PLUGINS``, comma-separated)
  imports MODULE before anything else, so that a third-party backend it registers with
  ``sgconv.register_backend`` is checked like the built-in ones.
* ``--hypothesis-profile ci|thorough`` (else ``$SGCONV_HYPOTHESIS_PROFILE``, else ``ci``).
"""

from __future__ import annotations

import functools
import importlib
import os

import pytest

import sgconv

from . import frameworks, hypothesis_profiles

BACKEND_ENV = "SGCONV_TEST_BACKEND"
PLUGINS_ENV = "SGCONV_TEST_PLUGINS"
_SELECTED = pytest.StashKey[tuple]()


def pytest_addoption(parser):
    group = parser.getgroup("sgconv-conformance", "sgconv conformance suite")
    group.addoption("--backend", action="append", default=None, metavar="NAME",
                    help="check only sgconv backend NAME (repeatable or comma-separated); "
                         f"default: ${BACKEND_ENV}, else every registered backend")
    group.addoption("--backend-plugin", action="append", default=None, metavar="MODULE",
                    help="import MODULE first, so that the backend it registers with "
                         f"sgconv.register_backend is known (also ${PLUGINS_ENV}, comma-separated)")


def _split(values) -> list[str]:
    out = []
    for value in values or ():
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


def pytest_configure(config):
    config.addinivalue_line("markers", "autodiff: needs a backend with automatic differentiation")
    config.addinivalue_line("markers", "framework_layer: needs a framework with its own layer "
                                       "object (sgconv.torch.SGConv, sgconv.jax.SGConv)")
    plugins = (_split(config.getoption("--backend-plugin"))
               or _split([os.environ.get(PLUGINS_ENV, "")]))
    for module in plugins:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise pytest.UsageError(f"sgconv conformance: cannot import backend plugin {module!r} "
                                    f"(from --backend-plugin / ${PLUGINS_ENV}): {exc}") from exc
    requested = _split(config.getoption("--backend")) or _split([os.environ.get(BACKEND_ENV, "")])
    known = sgconv.known_backends()
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise pytest.UsageError(
            f"sgconv conformance: unknown backend(s) {unknown}; registered: {list(known)}. "
            f"A third-party backend must be registered first: --backend-plugin MODULE or "
            f"${PLUGINS_ENV}=MODULE, where importing MODULE calls sgconv.register_backend.")
    config.stash[_SELECTED] = tuple(requested) or known
    profile = (config.getoption("hypothesis_profile", None)
               or os.environ.get(hypothesis_profiles.ENV_VAR, "").strip() or "ci")
    try:
        hypothesis_profiles.activate(profile)
    except Exception as exc:
        raise pytest.UsageError(f"sgconv conformance: {exc}") from exc


@functools.lru_cache(maxsize=None)
def _infos():
    """available_backends(), once per session (it imports each framework)."""
    return sgconv.available_backends()


def _selected(config) -> tuple:
    return config.stash.get(_SELECTED, sgconv.known_backends())


def pytest_report_header(config):
    selected = _selected(config)
    lines = ["sgconv conformance backends:"]
    for name, info in _infos().items():
        mark = "checked" if name in selected else "not selected"
        if info.usable:
            lines.append(f"  {name}: {info.version}; device {info.device} ({mark})")
        else:
            lines.append(f"  {name}: unusable here, will be skipped ({mark}): {info.reason}")
    lines.append(f"sgconv conformance hypothesis profile: {hypothesis_profiles.describe()}")
    return lines


def _skip_reason(name: str, needs_autodiff: bool, needs_layer: bool) -> str | None:
    info = _infos().get(name)
    if info is None:
        return f"backend {name!r} is not registered"
    if not info.usable:
        return f"backend {name!r} is unusable here: {info.reason}"
    if needs_autodiff:
        return frameworks.autodiff_unsupported(sgconv.backend(name))
    if needs_layer:
        return frameworks.framework_layer_unsupported(sgconv.backend(name))
    return None


def pytest_generate_tests(metafunc):
    """Parametrize ``backend_name`` over the selected backends; unusable ones are skipped."""
    if "backend_name" not in metafunc.fixturenames:
        return
    needs_autodiff = metafunc.definition.get_closest_marker("autodiff") is not None
    needs_layer = metafunc.definition.get_closest_marker("framework_layer") is not None
    params = []
    for name in _selected(metafunc.config):
        reason = _skip_reason(name, needs_autodiff, needs_layer)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(name, id=name, marks=marks))
    metafunc.parametrize("backend_name", params)
