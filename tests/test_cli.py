"""The ``sgconv`` command: every subcommand's exit status and output.

Subcommands are run in a subprocess (``python -m sgconv ...``), as a user runs them, except
where a test replaces part of the library to see a check fail (then ``cli.main`` is called
in-process).  Sizes are small so that the file runs in seconds on 2 cores.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sgconv
from sgconv import cli
from sgconv.cli import _common, check, kernel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, env_extra=None, pythonpath=(), cwd=None, timeout=300):
    """``python -m sgconv *args`` -> CompletedProcess (text, stdout/stderr captured)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*pythonpath, REPO, env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    env.pop("SGCONV_BACKEND", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "sgconv", *args], capture_output=True,
                          text=True, env=env, cwd=cwd or REPO, timeout=timeout)


def run_here(capsys, *args):
    """``cli.main(args)`` in this process (for cases that would only repeat a slow framework
    import in a subprocess), as a CompletedProcess."""
    capsys.readouterr()
    code = cli.main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def one_line_error(proc, *needles):
    """A user error: exit status 2, no traceback, the message on one stderr line."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# --- the command as a whole -----------------------------------------------------------------

def test_help_of_every_subcommand():
    top = run("--help")
    assert top.returncode == 0
    for command in ("info", "kernel", "bench", "check", "demo"):
        assert command in top.stdout
        proc = run(command, "--help")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"usage: sgconv {command}"), proc.stdout[:80]


def test_no_or_unknown_subcommand_is_a_usage_error():
    assert run().returncode == 2
    one_line_error(run("frobnicate"), "frobnicate")


def test_version():
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"sgconv {sgconv.__version__}"


def test_console_entry_point_and_python_m_run_main():
    """The installed ``sgconv`` script (pyproject's [project.scripts]) and ``python -m sgconv``
    both run sgconv.cli.main."""
    from importlib.metadata import entry_points

    import sgconv.__main__ as entry

    assert entry.main is cli.main
    (script,) = entry_points(group="console_scripts", name="sgconv")
    assert script.load() is cli.main


def test_one_module_per_subcommand():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == ["info", "kernel", "bench", "check", "demo"]
    for name, p in sub.choices.items():
        assert p.get_default("func").__module__ == f"sgconv.cli.{name}"


# --- info -----------------------------------------------------------------------------------

def test_info_lists_every_backend():
    proc = run("info")
    assert proc.returncode == 0, proc.stderr
    assert f"sgconv {sgconv.__version__}" in proc.stdout
    infos = sgconv.available_backends()
    for name, info in infos.items():
        row = next((line for line in proc.stdout.splitlines() if line.startswith(name + " ")),
                   None)
        assert row is not None, (name, proc.stdout)
        if info.usable:
            assert " ok " in row and info.version in row and info.device in row
        else:
            assert "unavailable" in row
            assert f"{name}: {info.reason}" in proc.stdout     # and why
    numpy_row = next(line for line in proc.stdout.splitlines() if line.startswith("numpy "))
    assert numpy_row.split()[-1].isdigit()                    # the thread count


# --- kernel ---------------------------------------------------------------------------------

def _independent_num_scales(l_max, d):
    # SPEC: N = 1 + ceil(log2(l_max / d)), never below 1
    return max(1, 1 + math.ceil(math.log2(l_max / d)))


@pytest.mark.parametrize("l_max,d,H", [(4096, 64, 4), (1000, 32, 3)])
def test_kernel_summary(l_max, d, H):
    proc = run("kernel", "--l-max", str(l_max), "--kernel-dim", str(d), "--d-model", str(H))
    assert proc.returncode == 0, proc.stderr
    N = _independent_num_scales(l_max, d)
    assert f"N = {N} scales" in proc.stdout
    # the scale table: one row per scale, lengths d*2^max(0, i-1) and contiguous offsets
    rows = [line.split() for line in proc.stdout.splitlines()
            if re.match(r"^\s*\d+\s+\d+\s+[\d,]+\s+\[", line)]
    assert len(rows) == N
    start = 0
    for i, row in enumerate(rows):
        size = d * 2 ** max(0, i - 1)
        assert int(row[0]) == i and int(row[1]) == 2 ** max(0, i - 1)
        assert int(row[2].replace(",", "")) == size
        assert f"[{start:,}, {start + size:,})" in " ".join(row)
        # decay weight m^(N-1-i) with m = 2 (the default decay)
        assert float(row[-2]) == pytest.approx(2.0 ** (N - 1 - i))
        start += size
    # parameter count vs L: N(L) * C' * H * d, against the dense C' * H * L
    for p in range(10, 21, 2):
        L = 2 ** p
        params = _independent_num_scales(L, d) * H * d
        assert re.search(rf"^\s*{L:,}\s+\d+\s+{params:,}\s+{H * L:,}\s", proc.stdout, re.M), L


def test_kernel_bad_values_are_one_line_errors():
    one_line_error(run("kernel", "--decay-min", "3", "--decay-max", "2"), "decay_min")
    one_line_error(run("kernel", "--d-model", "0"), "--d-model")
    one_line_error(run("kernel", "--decay-min", "nan"), "--decay-min")
    one_line_error(run("kernel", "--n-scales", "41"), "n_scales")
    one_line_error(run("kernel", "--channel", "9", "--d-model", "4"), "--channel")


@pytest.mark.parametrize("source", ["seed", "checkpoint", "learnable-decay checkpoint"])
def test_kernel_plot_is_a_png_of_the_expected_size(tmp_path, source):
    image = pytest.importorskip("matplotlib.image")
    path = tmp_path / "kernel.png"
    if source == "seed":
        args = ["--l-max", "2048", "--d-model", "3"]
    else:
        params = _trained_params(l_max=2000, learnable=source.startswith("learnable"))
        args = ["--params", sgconv.save(tmp_path / "trained", params)]
    proc = run("kernel", *args, "--plot", str(path))
    assert proc.returncode == 0, proc.stderr
    if source.startswith("learnable"):
        assert "learnable decay: m = 1 and k_raw[t] *= (t+1)^(-decay[h])" in proc.stdout
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(str(path))
    width, height = (round(x * kernel.DPI) for x in kernel.FIGSIZE)
    assert pixels.shape[:2] == (height, width)
    assert pixels[..., :3].std() > 0.05                       # drawn on, not a blank canvas


def test_kernel_plot_without_matplotlib_names_the_extra(tmp_path):
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text(
        "raise ImportError('simulated: matplotlib is not installed')\n")
    path = tmp_path / "kernel.png"
    proc = run("kernel", "--plot", str(path), pythonpath=[str(fake)])
    one_line_error(proc, "pip install 'sgconv[plot]'")
    assert not path.exists()
    assert run("kernel", pythonpath=[str(fake)]).returncode == 0   # the summary needs none


def test_kernel_plot_to_an_unwritable_path(tmp_path):
    pytest.importorskip("matplotlib")
    one_line_error(run("kernel", "--plot", str(tmp_path / "missing-dir" / "k.png")),
                   "cannot write")


# --- kernel of a trained checkpoint ----------------------------------------------------------

def _trained_params(d_model=3, l_max=300, kernel_dim=8, seed=5, learnable=False):
    """Parameters unlike a fresh init: a non-constant decay multiplier, a stored Z that is not
    the weights' norm, and sub-kernels scaled differently per scale (as training leaves them)."""
    cfg = sgconv.SGConvConfig(d_model=d_model, l_max=l_max, kernel_dim=kernel_dim,
                              decay_min=1.5, decay_max=3.0, learnable_decay=learnable)
    p = sgconv.init(cfg, seed=seed, dtype="float64", backend="numpy")
    rng = np.random.default_rng(seed)
    kernels = tuple(w * (0.2 + i) for i, w in enumerate(p.kernels))
    return p.replace(kernels=kernels, kernel_norm=rng.uniform(0.5, 2.0, p.kernel_norm.shape))


def _scale_rows(stdout):
    return [line.split() for line in stdout.splitlines()
            if re.match(r"^\s*\d+\s+\d+\s+[\d,]+\s+\[", line)]


def _assert_scale_table_is_of(stdout, params, channel):
    """Each scale row shows m^(N-1-i), m^(N-1-i)/Z and rms(w_i) of these parameters (written
    here from SPEC, not taken from the command's code)."""
    N = params.config.num_scales
    m, Z = np.asarray(params.multiplier), np.asarray(params.kernel_norm)
    rows = _scale_rows(stdout)
    assert len(rows) == N, stdout
    for i, row in enumerate(rows):
        decay = m ** (N - 1 - i)
        shown = (f"{decay.min():.4g}" if decay.min() == decay.max()   # m^0 = 1 on every channel
                 else f"{decay.min():.4g}..{decay.max():.4g}")
        assert row[5] == shown, row
        assert float(row[6]) == pytest.approx(decay[channel] / Z[0, channel], rel=1e-3)
        rms = np.sqrt(np.mean(np.asarray(params.kernels[i])[0, channel] ** 2))
        assert float(row[7]) == pytest.approx(rms, rel=1e-3)


def test_kernel_of_an_sgconv_npz_checkpoint(tmp_path):
    params = _trained_params()
    path = sgconv.save(tmp_path / "trained", params)
    proc = run("kernel", "--params", path, "--channel", "2")
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert "H=3 channels" in first and "l_max=300" in first and "checkpoint trained.npz" in first
    assert "decay multiplier m (stored): 1.5..3" in proc.stdout
    _assert_scale_table_is_of(proc.stdout, params, channel=2)


def test_kernel_of_a_released_torch_state_dict(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    params = _trained_params(d_model=2, l_max=128, kernel_dim=4)
    state = {k: torch.from_numpy(np.asarray(v)) for k, v in sgconv.to_state_dict(params).items()}
    single = tmp_path / "gconv.pt"
    torch.save(state, single)
    proc = run_here(capsys, "kernel", "--params", str(single), "--channel", "1")
    assert proc.returncode == 0, proc.stderr
    assert "checkpoint gconv.pt" in proc.stdout and "l_max=128" in proc.stdout  # K by default
    _assert_scale_table_is_of(proc.stdout, params, channel=1)

    # a whole model's state_dict (nested, two layers): --prefix picks one, and only it
    other = _trained_params(d_model=2, l_max=128, kernel_dim=4, seed=9)
    model = {"model": {**{f"layers.0.conv.{k}": v for k, v in state.items()},
                       **{f"layers.1.conv.{k}": torch.from_numpy(np.asarray(v))
                          for k, v in sgconv.to_state_dict(other).items()},
                       "head.weight": torch.zeros(3, 2)}}
    path = tmp_path / "model.pt"
    torch.save(model, path)
    one_line_error(run_here(capsys, "kernel", "--params", str(path)), "holds 2 SGConv layers",
                   "'model.layers.0.conv.'", "--prefix")
    proc = run_here(capsys, "kernel", "--params", str(path), "--prefix", "model.layers.1.conv",
               "--l-max", "100")
    assert proc.returncode == 0, proc.stderr
    assert "[model.layers.1.conv.]" in proc.stdout and "l_max=100" in proc.stdout
    _assert_scale_table_is_of(proc.stdout, other, channel=0)
    one_line_error(run_here(capsys, "kernel", "--params", str(path), "--prefix", "layers.7."),
                   "--prefix 'layers.7.' names no SGConv layer")


def test_kernel_params_errors_are_one_line(tmp_path):
    good = sgconv.save(tmp_path / "good", _trained_params())
    one_line_error(run("kernel", "--params", str(tmp_path / "none.npz")),
                   "no sgconv parameter file at")
    (tmp_path / "k.txt").write_text("not a checkpoint")
    one_line_error(run("kernel", "--params", str(tmp_path / "k.txt")),
                   "k.txt' is not an sgconv parameter file")
    assert run("kernel", "--params", good[:-len(".npz")]).returncode == 0   # as load finds it
    one_line_error(run("kernel", "--params", good, "--d-model", "4", "--seed", "1"),
                   "--d-model, --seed cannot go with --params")
    one_line_error(run("kernel", "--params", good, "--prefix", "a."), "--prefix")
    one_line_error(run("kernel", "--prefix", "a."), "--prefix goes with --params")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(open(good, "rb").read()[:300])
    one_line_error(run("kernel", "--params", str(broken)), "broken.npz", "truncated or corrupted")


def test_kernel_params_torch_file_errors(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)                  # a pickled module, not a dict
    one_line_error(run_here(capsys, "kernel", "--params", str(module)), "weights_only=True",
                   "torch.save(module.state_dict(), path)")
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listing)
    one_line_error(run_here(capsys, "kernel", "--params", str(listing)), "holds a list, not a state_dict")
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    one_line_error(run_here(capsys, "kernel", "--params", str(other)), "no SGConv layer", "weight")
    bad = tmp_path / "bad.pt"
    state = sgconv.to_state_dict(_trained_params())
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items() if k != "D"}, bad)
    one_line_error(run_here(capsys, "kernel", "--params", str(bad)), "bad.pt", "missing ['D']")
    one_line_error(run_here(capsys, "kernel", "--params", str(bad), "--channels", "2"),
                   "--channels cannot go with --params")


def test_kernel_params_pt_without_torch_names_the_extra(tmp_path):
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text(
        "raise ImportError('simulated: torch is not installed')\n")
    (tmp_path / "x.pt").write_bytes(b"")
    one_line_error(run("kernel", "--params", str(tmp_path / "x.pt"), pythonpath=[str(fake)]),
                   "pip install 'sgconv[torch]'")


# --- bench ----------------------------------------------------------------------------------

def _bench_rows(stdout):
    return [line.split() for line in stdout.splitlines()
            if re.match(r"^(numpy|torch|jax|cupy)\s", line)]


def test_bench_numpy_table():
    proc = run("bench", "--backend", "numpy", "--lengths", "256,300", "512", "--batch", "1",
               "--d-model", "4", "--repeat", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""                                   # no progress bar off a TTY
    assert "scipy.fft floor" in proc.stdout
    rows = _bench_rows(proc.stdout)
    assert [int(r[2].replace(",", "")) for r in rows] == [256, 300, 512]
    for r in rows:
        fwd, ratio, floor = float(r[3]), float(r[4]), float(r[7])
        # times are printed with >= 3 significant digits (each within 0.5%), the ratio with 2
        # decimals: the quotient of the printed times agrees to about 1% + 0.005
        assert fwd > 0 and floor > 0
        assert ratio == pytest.approx(fwd / floor, rel=0.011, abs=0.005)
        assert r[5] == "-" and r[6] == "-"                     # numpy has no backward


def test_bench_peak_memory_counts_at_least_what_the_forward_must_allocate():
    B, H, L = 1, 8, 65536
    proc = run("bench", "--backend", "numpy", "--lengths", str(L), "--batch", str(B),
               "--d-model", str(H), "--repeat", "1")
    assert proc.returncode == 0, proc.stderr
    (row,) = _bench_rows(proc.stdout)
    n = 2 * L                                                  # next_fast_len(2L - 1)
    # the output (B, H, L) float32 and the input's spectrum (B, H, n/2+1) complex64
    must = (B * H * L * 4 + B * H * (n // 2 + 1) * 8) / 2 ** 20
    assert must <= float(row[8]) < 50 * must, (row, must)


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_bench_autodiff_backend_has_backward_column(name):
    if not sgconv.available_backends()[name].usable:
        pytest.skip(f"{name} backend unavailable")
    proc = run("bench", "--backend", name, "--lengths", "256", "--batch", "1", "--d-model",
               "4", "--repeat", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    (row,) = _bench_rows(proc.stdout)
    assert float(row[5]) > 0 and float(row[6]) > 0
    if name == "jax":                                          # XLA's memory analysis
        assert row[9] == "(XLA)" and float(row[8]) > 0


def test_bench_bad_arguments():
    one_line_error(run("bench", "--backend", "nope"), "nope", "numpy")
    one_line_error(run("bench", "--lengths", "0"), "--lengths")
    one_line_error(run("bench", "--lengths", "ten"), "--lengths")
    one_line_error(run("bench", "--repeat", "0"), "--repeat")
    one_line_error(run("bench", "--dtype", "int8"), "--dtype")


class _FakeTTY:
    def __init__(self, tty):
        self.tty, self.text = tty, ""

    def isatty(self):
        return self.tty

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_progress_bar_only_on_a_terminal():
    stream = _FakeTTY(True)
    bar = _common.Progress(4, enabled=True, stream=stream)
    bar.show("numpy L=1024")
    bar.step("numpy L=1024")
    assert "[" in stream.text and "1/4 numpy L=1024" in stream.text and "\r" in stream.text
    bar.close()
    assert stream.text.endswith("\r")
    for tty, enabled in ((False, True), (True, False)):
        stream = _FakeTTY(tty)
        bar = _common.Progress(2, enabled=enabled, stream=stream)
        bar.step("x")
        bar.close()
        assert stream.text == ""


# --- check ----------------------------------------------------------------------------------

FAKE_SUITE = {
    "conftest.py": """
        import pytest

        def pytest_addoption(parser):
            parser.addoption("--backend", action="append", default=None)

        def pytest_generate_tests(metafunc):
            if "backend_name" in metafunc.fixturenames:
                names = [n for v in metafunc.config.getoption("--backend") or ["numpy,torch"]
                         for n in v.split(",")]
                metafunc.parametrize("backend_name", names)
    """,
    "test_fake.py": """
        import os

        def test_passes(backend_name):
            assert backend_name

        def test_fails_on_request(backend_name):
            assert os.environ.get("FAKE_FAIL") != backend_name
    """,
}


@pytest.fixture
def fake_suite(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    for name, text in FAKE_SUITE.items():
        (suite / name).write_text(textwrap.dedent(text))
    return suite


def test_check_passes_and_summarises(fake_suite):
    proc = run("check", "--backend", "numpy", "--path", str(fake_suite))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^numpy\s+2\s+0\s+0\s+0$", proc.stdout, re.M), proc.stdout
    assert "all passed" in proc.stdout


def test_check_exit_status_is_pytests(fake_suite):
    proc = run("check", "--backend", "numpy,torch", "--path", str(fake_suite),
               env_extra={"FAKE_FAIL": "torch"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"^numpy\s+2\s+0\s+0\s+0$", proc.stdout, re.M), proc.stdout
    assert re.search(r"^torch\s+1\s+1\s+0\s+0$", proc.stdout, re.M), proc.stdout
    assert "FAILED" in proc.stdout
    # arguments after -- go to pytest: deselecting the failing test makes it pass
    proc = run("check", "--backend", "torch", "--path", str(fake_suite), "--", "-k", "passes",
               env_extra={"FAKE_FAIL": "torch"})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_bad_arguments(tmp_path):
    one_line_error(run("check", "--path", str(tmp_path / "nowhere")), "--path")
    one_line_error(run("check", "--backend", "nope"), "nope")
    one_line_error(run("info", "--", "-x"), "'--'")


def test_check_runs_the_bundled_suite():
    """By default, the suite installed as sgconv.conformance: in a checkout, its conformance/
    folder (tests/test_packaging.py checks an installed wheel)."""
    assert check.suite_dir(None) == os.path.join(REPO, "conformance")


# --- demo -----------------------------------------------------------------------------------

def test_demo_default_runs_and_passes():
    proc = run("demo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "L=65,536" in proc.stdout
    assert proc.stdout.count("  PASS  ") == 2 and proc.stdout.rstrip().endswith("result: PASS")


@pytest.mark.parametrize("length,check_length,positions", [(3001, 700, 9), (100, 2048, 5),
                                                          (1, 2048, 3)])
def test_demo_small_and_edge_lengths(length, check_length, positions, capsys):
    assert cli.main(["demo", "--length", str(length), "--d-model", "5", "--check-length",
                      str(check_length), "--positions", str(positions)]) == 0
    out = capsys.readouterr().out
    assert f"first {min(length, check_length):,} outputs" in out
    assert out.count("  PASS  ") == 2 and out.rstrip().endswith("result: PASS")


def test_demo_fails_on_a_wrong_layer(monkeypatch, capsys):
    """The demo's checks can fail: a layer that is off by 1e-4 relative is caught."""
    real = sgconv.apply
    monkeypatch.setattr(sgconv, "apply", lambda p, u, **kw: real(p, u, **kw) * np.float32(1 + 1e-4))
    assert cli.main(["demo", "--length", "2048", "--d-model", "4", "--check-length", "256",
                      "--positions", "4"]) == 1
    out = capsys.readouterr().out
    assert out.count("  FAIL  ") == 2 and out.rstrip().endswith("result: FAIL")


def test_demo_bad_arguments():
    one_line_error(run("demo", "--length", "0"), "--length")
    one_line_error(run("demo", "--batch", "x"), "--batch")
