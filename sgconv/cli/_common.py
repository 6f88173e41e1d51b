"""What the subcommands share: the user-facing error, argument types, number formatting, the
plain-text table, the progress bar, and where the bundled reference and conformance suite are."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import shutil
import sys

from .._measure import cores

__all__ = ["PROG", "CliError", "int_at_least", "positive_float", "split_names", "backend_names",
           "fmt_int", "fmt_3", "fmt_ms", "table", "Progress", "bundled", "bundled_dir", "cores"]

PROG = "sgconv"


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# --- argument types -------------------------------------------------------------------------

def int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def split_names(values) -> list[str]:
    """['numpy,torch', 'jax'] -> ['numpy', 'torch', 'jax'] (order kept, duplicates dropped)."""
    out: list[str] = []
    for value in values or ():
        for part in value.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def backend_names(values) -> list[str] | None:
    """The --backend values as registered backend names (None: none given), or CliError."""
    import sgconv

    names = split_names(values)
    known = sgconv.known_backends()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CliError(f"unknown backend {unknown[0]!r}; expected one of {', '.join(known)}")
    return names or None


# --- output ---------------------------------------------------------------------------------

def fmt_int(n: int) -> str:
    return f"{n:,}"


def fmt_3(x: float) -> str:
    """x with at least 3 significant digits (up to 4 decimals): 1234, 123, 12.3, 0.0123."""
    decimals = 0 if x >= 100 else min(4, 2 - math.floor(math.log10(x))) if x > 0 else 1
    return f"{x:.{decimals}f}"


def fmt_ms(seconds: float) -> str:
    return fmt_3(1e3 * seconds)


def table(header, rows, aligns=None) -> str:
    """A plain-text table; ``aligns``: '<' or '>' per column (numbers right-aligned)."""
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    aligns = aligns or ["<"] * len(header)
    lines = []
    for j, r in enumerate(cells):
        lines.append("  ".join(f"{c:{a}{w}}" for c, a, w in zip(r, aligns, widths)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths).rstrip())
    return "\n".join(lines)


class Progress:
    """A one-line progress bar on stderr, ``[#####.....] 3/12 label``; off when not a TTY."""

    def __init__(self, total: int, enabled: bool, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.total = max(total, 1)
        self.done = 0
        self.enabled = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self._width = 0

    def show(self, label: str) -> None:
        if not self.enabled:
            return
        columns = shutil.get_terminal_size((80, 20)).columns
        bar_width = 24
        filled = round(bar_width * self.done / self.total)
        text = (f"[{'#' * filled}{'.' * (bar_width - filled)}] {self.done}/{self.total} "
                f"{label}")[:max(columns - 1, 10)]
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def step(self, label: str = "") -> None:
        self.done += 1
        self.show(label)

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()


# --- the bundled reference and conformance suite --------------------------------------------

def _checkout_dir(name: str) -> str | None:
    """``<checkout>/<name>`` when the running sgconv is a source checkout's ``sgconv/`` folder
    (its parent holds pyproject.toml and ``<name>/__init__.py``), else None."""
    import sgconv

    root = os.path.dirname(os.path.dirname(os.path.abspath(sgconv.__file__)))
    folder = os.path.join(root, name)
    if (os.path.isfile(os.path.join(root, "pyproject.toml"))
            and os.path.isfile(os.path.join(folder, "__init__.py"))):
        return folder
    return None


def _missing(name: str) -> CliError:
    return CliError(f"sgconv.{name} is not part of this sgconv installation (the wheel installs "
                    f"the repository's {name}/ folder as sgconv.{name}); reinstall with "
                    f"'pip install --force-reinstall sgconv', or run from a clone of the "
                    f"repository")


def bundled_dir(name: str) -> str:
    """The folder of the bundled package ``sgconv.<name>`` ('reference' or 'conformance'),
    without importing it: the installed one, or in a source checkout used without installing,
    the checkout's top-level ``<name>/``.  CliError if neither exists."""
    spec = importlib.util.find_spec(f"sgconv.{name}")
    if spec is not None and spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    folder = _checkout_dir(name)
    if folder is None:
        raise _missing(name)
    return folder


def bundled(name: str):
    """The bundled package ``sgconv.<name>``, imported: installed, or loaded under that same
    name from a source checkout's top-level ``<name>/`` folder (see :func:`bundled_dir`)."""
    full = f"sgconv.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as exc:
        if exc.name != full:
            raise
    folder = _checkout_dir(name)
    if folder is None:
        raise _missing(name)
    spec = importlib.util.spec_from_file_location(
        full, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[full]
        raise
    return module
