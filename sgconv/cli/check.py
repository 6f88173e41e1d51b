"""``sgconv check``: run the conformance suite (pytest, in a subprocess) and summarise it per
backend.

The suite is the one installed with the package (``sgconv.conformance``: the repository's
``conformance/`` folder, meta-tests included), or in a source checkout that folder itself; or
any suite directory given with ``--path``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

from ._common import CliError, backend_names, bundled_dir, table

__all__ = ["add_parser", "run", "suite_dir"]


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="run the conformance suite",
                       description="Run the conformance suite (pytest, in a subprocess) for "
                       "the given backends and print a summary; the exit status is pytest's. "
                       "Arguments after '--' go to pytest.")
    p.add_argument("--backend", action="append", metavar="NAME",
                   help="backend(s) to check (repeatable or comma-separated; default: all)")
    p.add_argument("--path", default=None, metavar="DIR",
                   help="a conformance suite directory (default: the one installed with sgconv, "
                   "sgconv.conformance)")
    p.set_defaults(func=run)


def suite_dir(path: str | None) -> str:
    """The suite to run: ``--path`` if given, else the bundled ``sgconv.conformance``."""
    if path is not None:
        if not os.path.isdir(path):
            raise CliError(f"--path {path!r} is not a directory")
        return os.path.abspath(path)
    return os.path.abspath(bundled_dir("conformance"))


def _junit_counts(path: str, names) -> dict:
    """Per-backend outcome counts from pytest's JUnit XML (the backend read from the test id;
    tests without one, such as the suite's meta-tests of its own helpers, counted apart)."""
    counts = {}
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return counts
    for case in root.iter("testcase"):
        test_id = case.get("name", "")
        params = test_id[test_id.find("[") + 1:-1] if "[" in test_id else ""
        tokens = set(re.split(r"[-,\[\] ]", params))
        owner = next((n for n in names if n in tokens), "(suite self-tests)")
        kinds = {child.tag for child in case}
        outcome = ("failed" if "failure" in kinds else "error" if "error" in kinds
                   else "skipped" if "skipped" in kinds else "passed")
        row = counts.setdefault(owner, {"passed": 0, "failed": 0, "error": 0, "skipped": 0})
        row[outcome] += 1
    return counts


def run(args) -> int:
    import sgconv

    names = backend_names(args.backend)
    if importlib.util.find_spec("pytest") is None:
        raise CliError("sgconv check needs pytest, which is not installed: "
                       "pip install 'sgconv[test]'")
    suite = suite_dir(args.path)
    parent = os.path.dirname(suite)
    # A suite inside an installed package is run apart from wherever this command was started:
    # no configuration file of the surroundings (-c devnull), and a working directory of its
    # own, since the interpreter puts the working directory first on sys.path (inside the
    # sgconv package, its `torch` and `jax` subpackages would shadow the frameworks).  A
    # suite in a checkout (its folder beside pyproject.toml) or given with --path keeps its
    # project's configuration and runs from the folder above it.
    installed = args.path is None and not os.path.isfile(os.path.join(parent, "pyproject.toml"))
    with tempfile.TemporaryDirectory() as tmp:
        junit = os.path.join(tmp, "junit.xml")
        cmd = [sys.executable, "-m", "pytest", suite, "-q", "-p", "no:cacheprovider",
               f"--junitxml={junit}", "-o", "junit_family=xunit2"]
        if installed:
            cmd += ["-c", os.devnull, "--rootdir", parent]
        if names:
            cmd += ["--backend", ",".join(names)]
        cmd += list(args.pytest_args)
        print("running: " + " ".join(cmd[2:]), flush=True)
        t0 = time.perf_counter()
        env = dict(os.environ)
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(sgconv.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        code = subprocess.call(cmd, env=env, cwd=tmp if installed else parent)
        elapsed = time.perf_counter() - t0
        counts = _junit_counts(junit, names or list(sgconv.known_backends()))
    print()
    if counts:
        rows = [[owner, c["passed"], c["failed"], c["error"], c["skipped"]]
                for owner, c in counts.items()]
        print(table(["backend", "passed", "failed", "errors", "skipped"], rows,
                    ["<", ">", ">", ">", ">"]))
    verdict = {0: "all passed", 1: "some tests FAILED", 5: "no tests were collected"}.get(
        code, f"pytest exited with status {code}")
    print(f"conformance suite {suite}: {verdict} ({elapsed:.1f} s); exit status {code}")
    return code
