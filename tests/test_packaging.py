"""What ``pip install sgconv`` gives: the wheel holds the package with its float64 reference
(``sgconv.reference``), its conformance suite (``sgconv.conformance``, meta-tests included),
``py.typed`` and the ``sgconv`` script; installed apart from this checkout and run from an
empty folder, ``sgconv demo`` and ``sgconv check`` use the installed copies, and the installed
reference imports nothing from sgconv.

The wheel is built once (from a copy of the source tree, so that a stale ``build/`` folder
cannot leak old files into it) and unpacked with ``pip install --no-deps --target``; NumPy,
SciPy, pytest and Hypothesis come from this environment.  CI (.ci/run) also installs the wheel
into a fresh virtualenv and runs the full ``sgconv demo`` and ``sgconv check`` there.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Folders of the repository installed under the sgconv namespace (pyproject's package-dir).
MAPPED = {"reference": "sgconv.reference", "conformance": "sgconv.conformance"}


def _packages_in_tree() -> set:
    """Every package (a folder with __init__.py) of sgconv/, reference/ and conformance/, by
    the name it has when installed."""
    names = set()
    for top in ("sgconv", *MAPPED):
        for folder, _, files in os.walk(os.path.join(REPO, top)):
            if "__init__.py" in files and "__pycache__" not in folder:
                rel = os.path.relpath(folder, REPO).replace(os.sep, ".")
                head, _, rest = rel.partition(".")
                names.add(MAPPED.get(head, head) + ("." + rest if rest else ""))
    return names


def test_pyproject_lists_every_package_of_the_tree():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    setuptools = project["tool"]["setuptools"]
    assert set(setuptools["packages"]) == _packages_in_tree()
    assert setuptools["package-dir"] == {v: k for k, v in MAPPED.items()}
    assert "py.typed" in setuptools["package-data"]["sgconv"]
    assert project["project"]["scripts"] == {"sgconv": "sgconv.cli:main"}


def _setuptools_major() -> int:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("setuptools").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return 0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis", ".asv",
        ".pytest_cache", "*.png", "*.whl"))
    # pyproject asks for setuptools>=68: use this environment's when it has one (no download)
    isolation = [] if _setuptools_major() >= 68 else ["--use-pep517"]
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           *(isolation or ["--no-build-isolation"]), "-w", str(tmp / "dist"),
                           str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (path,) = glob.glob(str(tmp / "dist" / "sgconv-*.whl"))
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """(site folder holding the installed sgconv, env that puts it first, an empty cwd)."""
    site = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--target", str(site), wheel],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SGCONV_BACKEND")}
    env["PYTHONPATH"] = str(site)
    return site, env, tmp_path_factory.mktemp("elsewhere")


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("sgconv/py.typed", "sgconv/_measure.py", "sgconv/cli/__init__.py",
                   "sgconv/cli/demo.py", "sgconv/reference/__init__.py",
                   "sgconv/reference/sgconv_ref.py", "sgconv/reference/README.md",
                   "sgconv/conformance/conftest.py", "sgconv/conformance/test_properties.py",
                   "sgconv/conformance/meta/test_meta.py", "sgconv/conformance/README.md"):
        assert needed in names, needed
    tops = {name.split("/")[0] for name in names}
    assert tops == {"sgconv", "sgconv-0.1.0.dist-info"}, tops     # no top-level reference
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "sgconv = sgconv.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def _python(installed, *args, timeout=300):
    site, env, cwd = installed
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def test_installed_package_is_the_one_imported(installed):
    site = installed[0]
    proc = _python(installed, "-c", "import sgconv, sgconv.reference, sgconv.conformance, "
                   "sgconv.cli; print(sgconv.__file__); print(sgconv.reference.__file__); "
                   "print(sgconv.conformance.__file__)")
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.split():
        assert line.startswith(str(site)), (line, site)


def test_installed_demo_uses_the_installed_reference(installed):
    proc = _python(installed, "-m", "sgconv", "demo", "--length", "4099", "--d-model", "4",
                   "--check-length", "300", "--positions", "5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"({installed[0] / 'sgconv' / 'reference'})" in proc.stdout
    assert proc.stdout.rstrip().endswith("result: PASS")


def test_installed_reference_imports_nothing_from_sgconv(installed):
    """The reference's own independence test, run on the installed files."""
    folder = installed[0] / "sgconv" / "reference"
    proc = _python(installed, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull,
                   "--rootdir", str(folder), str(folder), "-k", "never_imports_sgconv")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_installed_check_runs_the_installed_suite_with_its_meta_tests(installed):
    """A slice of the suite (its helpers' own tests and the meta-tests of one planted bug) on
    NumPy; CI runs the whole installed suite for every backend."""
    suite = installed[0] / "sgconv" / "conformance"
    proc = _python(installed, "-m", "sgconv", "check", "--backend", "numpy", "--", "-vv", "-k",
                   "test_helpers or circular or every_bug or correct_backend")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"conformance suite {suite}: all passed" in proc.stdout
    for test in ("/conformance/test_helpers.py::test_assert_close_can_fail PASSED",
                 "/conformance/meta/test_meta.py::test_bug_is_caught_on_fixed_examples[circular]"
                 " PASSED", "/conformance/meta/test_meta.py::test_every_bug_has_catchers PASSED"):
        assert test in proc.stdout, (test, proc.stdout)


def test_checkout_without_install_finds_its_own_reference_and_suite(tmp_path):
    """A checkout used without installing (PYTHONPATH=checkout; no editable install's
    finder): sgconv.reference and the suite are the checkout's top-level folders."""
    code = ("import sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path\n"
            "                    if '__editable__' not in getattr(f, '__module__', '')]\n"
            "from sgconv.cli import _common, main\n"
            "print(_common.bundled_dir('conformance'))\n"
            "sys.exit(main(['demo', '--length', '600', '--d-model', '3']))\n")
    env = {k: v for k, v in os.environ.items() if k != "SGCONV_BACKEND"}
    env["PYTHONPATH"] = REPO
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0] == os.path.join(REPO, "conformance")
    assert f"sgconv.reference ({os.path.join(REPO, 'reference')})" in proc.stdout
