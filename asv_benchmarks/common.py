"""Shared helpers of the asv suite: imports, backend selection, parameter grids, timing.

Rules every benchmark here follows (shared/STYLE.md, "Benchmarks"):

- The backend is passed explicitly: each timed call and each ``setup`` runs inside
  ``with sgconv.using(name):``; no benchmark leaves the process-wide switch set.
- A backend that cannot run here (framework missing, no GPU) is skipped by raising
  NotImplementedError in ``setup`` (asv reports it as n/a, not as a failure), and so is a
  dtype the backend would not keep (JAX without x64 turns float64 into float32).
- Device work is synchronised before a timed call returns, and JAX functions are jitted
  and compiled in ``setup``, outside the timed region.

Imports: with ``asv run -E existing`` the package may not be installed in the current
environment; then ``sgconv`` is imported from the checkout that holds this directory.
In asv's own environments the installed ``sgconv`` (of the commit being measured) wins.
The float64 oracle is loaded from this checkout's ``reference/`` (the copy installed as
``sgconv.reference`` may belong to another commit in asv's environments).  The timed
layer calls (``compiled``, ``forward_fn``, ``forward_backward_fn``) are
``sgconv._measure``'s, the helper that ``sgconv bench`` uses too.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import sgconv
except ImportError:  # asv -E existing without `pip install .`: use this checkout
    sys.path.insert(0, REPO_ROOT)
    import sgconv

# The layer as a timed call, shared with `sgconv bench` (one helper for both).
from sgconv._measure import compiled, forward_backward_fn, forward_fn  # noqa: E402

__all__ = ["sgconv", "REPO_ROOT", "SMALLEST", "BACKENDS", "AUTODIFF_BACKENDS", "LENGTHS",
           "DTYPES",
           "BATCH", "D_MODEL", "SEED", "reference", "require_backend", "require_dtype",
           "native", "synchronize", "layer_config", "random_input", "make_params", "compiled",
           "forward_fn", "forward_backward_fn", "to_numpy", "max_relative_error",
           "DIRECT_MAX_LENGTH", "reference_state", "fft_oracle_layer", "oracle_layer"]

#: Every registered backend; the ones that cannot run here are skipped in setup.
BACKENDS = ("numpy", "torch", "jax", "cupy")
#: Backends whose arrays carry gradients (forward+backward is timed for these).
AUTODIFF_BACKENDS = ("torch", "jax")
#: CI sets SGCONV_BENCH_SMALLEST=1 to run every benchmark once at its smallest size, so the
#: suite cannot rot without costing CI the full grid (see .ci/run).
SMALLEST = os.environ.get("SGCONV_BENCH_SMALLEST", "") == "1"
#: Sequence lengths L of the main grid.
LENGTHS = (1024,) if SMALLEST else (1024, 4096, 16384, 65536)
#: Floating dtypes of the grid (half precision is computed in float32, so not a separate row).
DTYPES = ("float32", "float64")
#: Batch B and width H: small enough that the largest L runs in well under a second on CPU.
BATCH = 2
D_MODEL = 32
SEED = 0


@functools.lru_cache(maxsize=1)
def reference():
    """The float64 reference package ``reference/`` of this checkout (never installed).

    Loaded by file location under its own name only, so that the checkout's ``sgconv``
    does not shadow the installed one in asv's environments.
    """
    if "reference" in sys.modules:
        return sys.modules["reference"]
    init = os.path.join(REPO_ROOT, "reference", "__init__.py")
    spec = importlib.util.spec_from_file_location(
        "reference", init, submodule_search_locations=[os.path.dirname(init)])
    if spec is None or not os.path.exists(init):
        raise NotImplementedError(f"the float64 reference is not at {init}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["reference"] = module
    spec.loader.exec_module(module)
    return module


def require_backend(name: str):
    """The loaded backend object ``name``, or NotImplementedError (asv: skipped) saying why."""
    try:
        return sgconv.backend(name)
    except (ImportError, ValueError) as exc:  # BackendUnavailableError is an ImportError
        raise NotImplementedError(f"backend {name!r} unavailable: {exc}") from None


def native(bk, x: np.ndarray, dtype: str):
    """``x`` as an array of backend ``bk`` in ``dtype``; NotImplementedError if not kept.

    (JAX without ``jax_enable_x64`` would silently compute float64 input in float32:
    that row is skipped rather than reported under the wrong dtype.)
    """
    out = bk.asarray(x, dtype=dtype)
    got = bk.dtype_name(out)
    if got != dtype:
        raise NotImplementedError(f"backend {bk.name!r} turned {dtype} into {got} here")
    return out


def synchronize(name: str) -> None:
    """Wait for the backend's queued device work (a no-op on CPU backends)."""
    sgconv.backend(name).synchronize()


def layer_config(length: int, d_model: int = D_MODEL, **options) -> "sgconv.SGConvConfig":
    """The benchmarked layer: H = d_model, l_max = L, the paper's defaults otherwise."""
    return sgconv.SGConvConfig(d_model=d_model, l_max=length, **options)


def random_input(batch: int, d_model: int, length: int, seed: int = SEED) -> np.ndarray:
    """u ~ N(0, 1) of shape (B, H, L), float64 (cast per benchmark)."""
    return np.random.default_rng(seed + 1).standard_normal((batch, d_model, length))


def require_dtype(name: str, dtype: str) -> None:
    """NotImplementedError (asv: skipped) when backend ``name`` cannot compute in ``dtype``.

    JAX computes float64 only in 64-bit mode, a process-wide jax.config switch that sgconv
    (and this suite) never turns on for you: those rows are skipped unless it is on.
    """
    if name == "jax" and dtype == "float64":
        x64 = getattr(require_backend("jax"), "x64_enabled", None)
        if x64 is not None and not x64():
            raise NotImplementedError("jax float64 needs jax_enable_x64, which is off")


def make_params(name: str, config, dtype: str):
    """Parameters from seed SEED on backend ``name`` in ``dtype`` (same numbers everywhere)."""
    require_dtype(name, dtype)
    with sgconv.using(name):
        params = sgconv.init(config, seed=SEED, dtype=dtype, backend=name)
    if params.dtype != dtype:
        raise NotImplementedError(f"backend {name!r} turned {dtype} parameters into {params.dtype}")
    return params


def to_numpy(name: str, x) -> np.ndarray:
    """A backend array as a NumPy array (detached, on the host)."""
    bk = sgconv.backend(name)
    if name == "torch":
        x = x.detach()
    return np.asarray(bk.to_numpy(x))


def max_relative_error(y, y_ref) -> float:
    """max |y - y_ref| / max |y_ref|, in float64: one number per comparison."""
    y = np.asarray(y, dtype=np.float64)
    y_ref = np.asarray(y_ref, dtype=np.float64)
    return float(np.max(np.abs(y - y_ref)) / np.max(np.abs(y_ref)))


#: Longest L at which the oracle is the reference's direct O(L^2) sums (about 1 s at
#: B=2, H=32, L=4096 on this machine's CPU); longer L use the float64 FFT oracle below.
DIRECT_MAX_LENGTH = 4096


def reference_state(config, dtype: str) -> dict:
    """The layer's parameters from seed SEED, rounded to ``dtype`` then held in float64.

    (Rounded first, so that an error measured against this state is the computation's,
    not the rounding of the parameters.)  Laid out as the released state_dict.
    """
    params = sgconv.init(config, seed=SEED, dtype=dtype, backend="numpy")
    return {k: np.asarray(v).astype(np.float64) for k, v in sgconv.to_state_dict(params).items()}


def fft_oracle_layer(state: dict, u: np.ndarray) -> np.ndarray:
    """The causal layer in float64 with the reference's kernel and a plain float64 FFT.

    k = reference.kernel(state, L) (C, H, L); y = irfft(rfft(u, 2L) rfft(k, 2L), 2L)[:L]
    + D u with numpy.fft (not scipy.fft, not sgconv's planner); then reference.gelu and
    the mixing linear.  Its rounding error, about 1e-16 log2(2L) relative, is far below
    what a float32 backend shows.  u: (B, H, L) float64 -> (B, H, L) float64.
    """
    ref = reference()
    D = state["D"]                                                 # (C, H)
    C, H = D.shape
    B, _, L = u.shape
    k = ref.kernel(state, L)                                       # (C', H, L)
    if k.shape[0] != C:
        raise ValueError("fft_oracle_layer computes the causal layer only")
    n = 2 * L                                                      # linear, not circular
    y = np.fft.irfft(np.fft.rfft(u, n)[:, None] * np.fft.rfft(k, n), n)[..., :L]  # (B, C, H, L)
    y = y + D[None, :, :, None] * u[:, None]                       # skip term D u
    y = ref.gelu(y.reshape(B, C * H, L))                           # (B, C*H, L)
    W, bias = state["output_linear.weight"], state["output_linear.bias"]
    return np.einsum("oi,bil->bol", W, y) + bias[None, :, None]    # (B, H, L)


def oracle_layer(state: dict, u: np.ndarray) -> tuple[np.ndarray, str]:
    """(float64 layer output, how it was computed): the reference's direct sums
    (``reference.layer``) for L <= DIRECT_MAX_LENGTH, else :func:`fft_oracle_layer`."""
    if u.shape[-1] <= DIRECT_MAX_LENGTH:
        return reference().layer(state, u), "direct sums (reference.layer)"
    return fft_oracle_layer(state, u), "float64 FFT of reference.kernel"


class SingleCalls:
    """asv timing for calls that take seconds on a 2-core CPU: single calls, a few of them.

    Subclasses set ``params`` (the implementations) and may override ``repeat``/``timeout``.
    """

    param_names = ["implementation"]
    number = 1
    repeat = (3, 5, 120.0)
    rounds = 1
    warmup_time = 0.0
    timeout = 600
