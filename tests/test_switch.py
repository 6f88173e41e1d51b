"""The backend switch: use/using/get_backend/available_backends and lazy imports."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import sgconv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code, **env):
    full_env = {**os.environ, "PYTHONPATH": ROOT, **env}
    full_env.pop("SGCONV_BACKEND", None) if "SGCONV_BACKEND" not in env else None
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=120)


def test_import_loads_no_framework():
    res = _run("import sgconv, sys; import sgconv.backends; "
               "print(sorted({'torch','jax','jaxlib','cupy'} & set(sys.modules)))")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_import_prints_nothing():
    res = _run("import sgconv")
    assert res.returncode == 0 and res.stdout == "" and res.stderr == ""


def test_environment_variable_sets_default():
    res = _run("import sgconv; print(sgconv.get_backend())", SGCONV_BACKEND="numpy")
    assert res.stdout.strip() == "numpy"
    res = _run("import sgconv; print(sgconv.get_backend())", SGCONV_BACKEND="nonsense")
    assert res.returncode != 0 and "SGCONV_BACKEND='nonsense'" in res.stderr


def test_default_is_numpy_without_env():
    res = _run("import sgconv; print(sgconv.get_backend())")
    assert res.stdout.strip() == "numpy"


@pytest.fixture
def restore_backend():
    """Put back the process-wide backend and the registry as they were."""
    from sgconv import _switch
    previous = sgconv.get_backend()
    registry, instances = dict(_switch._REGISTRY), dict(_switch._INSTANCES)
    yield
    sgconv.use(previous)
    _switch._REGISTRY.clear()
    _switch._REGISTRY.update(registry)
    _switch._INSTANCES.clear()
    _switch._INSTANCES.update(instances)


def test_use_returns_previous_and_unknown_name_changes_nothing(restore_backend):
    assert sgconv.use("numpy") == "numpy"
    with pytest.raises(ValueError, match=r"unknown sgconv backend 'tensorflow'; expected one of "
                                         r"'numpy', 'torch', 'jax', 'cupy'"):
        sgconv.use("tensorflow")
    assert sgconv.get_backend() == "numpy"


def test_use_is_seen_by_other_threads(restore_backend):
    from sgconv.backends.numpy import NumpyBackend

    class FakeBackend(NumpyBackend):
        name = "fake_threads"

    sgconv.register_backend("fake_threads", FakeBackend, replace=True)
    sgconv.use("fake_threads")
    seen = []
    t = threading.Thread(target=lambda: seen.append(sgconv.get_backend()))
    t.start()
    t.join()
    assert seen == ["fake_threads"]


def test_using_is_scoped_nested_and_restored_on_error(restore_backend):
    from sgconv.backends.numpy import NumpyBackend

    class Other(NumpyBackend):
        name = "other_numpy"

    sgconv.register_backend("other_numpy", Other, replace=True)
    sgconv.use("numpy")
    with sgconv.using("other_numpy") as bk:
        assert sgconv.get_backend() == "other_numpy" and bk.name == "other_numpy"
        with sgconv.using("numpy"):
            assert sgconv.get_backend() == "numpy"
        assert sgconv.get_backend() == "other_numpy"
        # A using() block is local to its context: a new thread sees the process-wide one.
        seen = []
        t = threading.Thread(target=lambda: seen.append(sgconv.get_backend()))
        t.start()
        t.join()
        assert seen == ["numpy"]
    assert sgconv.get_backend() == "numpy"
    with pytest.raises(RuntimeError):
        with sgconv.using("other_numpy"):
            raise RuntimeError("boom")
    assert sgconv.get_backend() == "numpy"


def test_available_backends_reports_every_known_one():
    info = sgconv.available_backends()
    assert set(info) >= {"numpy", "torch", "jax", "cupy"}
    assert info["numpy"].usable and info["numpy"].reason is None
    assert "numpy" in info["numpy"].version and "cpu" in info["numpy"].device
    for row in info.values():
        assert row.usable == (row.reason is None)
        if not row.usable:
            assert row.reason  # says why


def test_missing_framework_raises_importerror_naming_the_extra():
    # A subprocess where 'torch' cannot be imported (None in sys.modules blocks the import).
    res = _run("import sys; sys.modules['torch'] = None\n"
               "import sgconv\n"
               "try:\n    sgconv.use('torch')\n"
               "except ImportError as e:\n"
               "    print(type(e).__name__, isinstance(e, sgconv.BackendUnavailableError), e)\n"
               "print(sgconv.get_backend())\n"
               "print(sgconv.available_backends()['torch'].reason)")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("BackendUnavailableError True") and "sgconv[torch]" in lines[0]
    assert lines[1] == "numpy"
    assert "sgconv[torch]" in lines[2]


def test_foreign_array_raises_typeerror_naming_both():
    torch = pytest.importorskip("torch")
    params = sgconv.init(sgconv.SGConvConfig(d_model=2, l_max=16, kernel_dim=4), backend="numpy")
    with sgconv.using("numpy"):
        with pytest.raises(TypeError, match=r"active backend is 'numpy' but it was given a torch "
                                            r"array .*sgconv.use\('torch'\)"):
            sgconv.apply(params, torch.zeros(1, 2, 8))


def test_lists_and_numpy_arrays_are_accepted():
    params = sgconv.init(sgconv.SGConvConfig(d_model=2, l_max=8, kernel_dim=4), dtype="float64")
    u = np.arange(16, dtype=np.float64).reshape(1, 2, 8)
    with sgconv.using("numpy"):
        np.testing.assert_array_equal(sgconv.apply(params, u.tolist()), sgconv.apply(params, u))


def test_register_backend_rejects_bad_input(restore_backend):
    with pytest.raises(ValueError, match="already registered"):
        sgconv.register_backend("numpy", object)
    with pytest.raises(TypeError, match="callable"):
        sgconv.register_backend("brandnew", 3)
    sgconv.register_backend("not_a_backend", lambda: object(), replace=True)
    with pytest.raises(TypeError, match="expected an sgconv.backends.Backend"):
        sgconv.use("not_a_backend")
    assert sgconv.available_backends()["not_a_backend"].usable is False
