"""Deliberately broken backends: each plants one bug that a correct SGConv must not have.

They are the NumPy backend (the PyTorch one for ``grad_forward``, a bug only autograd
shows) with one thing changed, registered as ``broken_<bug>``.  A bug that lives in a
backend's primitives is an override in a subclass (the anti-causal flip, the dtype
handling, float32 FFTs, non-finite values zeroed, dropout).  A bug that lives in the
generic math (sgconv/_ops.py) or in a public function (``sgconv.apply``, ``sgconv.init``)
is planted by wrapping that function with a version that misbehaves only for a broken
backend with that bug, so every other backend keeps computing correctly while the
patches are installed.

    with installed():                        # register the backends, patch the functions
        check_conv("broken_circular", ex)    # raises AssertionError

Bugs of the framework layers themselves (``FRAMEWORK_BUGS``: sgconv.torch.SGConv,
sgconv.jax) are patches of those public objects, active inside
``framework_bug(bug)``; the correct torch or jax backend then fails the properties.

``conformance/meta/plugin.py`` installs them for a whole pytest session, to watch the
suite fail: ``pytest conformance --backend-plugin conformance.meta.plugin
--backend broken_circular``.
"""

from __future__ import annotations

import contextlib
import importlib
import threading

import numpy as np

import sgconv
from sgconv import _ops, _switch
from sgconv.backends._base import Backend
from sgconv.backends.numpy import NumpyBackend
from sgconv.backends.torch import TorchBackend

__all__ = ["BUGS", "FRAMEWORK_BUGS", "BrokenBackend", "backend_name", "install", "uninstall",
           "installed", "framework_bug"]

#: bug -> what it plants.
BUGS = {
    "circular": "circular instead of linear convolution: FFT length L (no padding), no blocks",
    "anti_shift": "the anti-causal half shifted by one tap: k1[j] reaches j+2 steps ahead",
    "z_recomputed": "Z recomputed from the current weights on every call (stored Z ignored)",
    "align_corners": "upsampling with align_corners=True instead of half-pixel centres",
    "decay_reversed": "decay in the wrong direction: scale i weighted m^i, not m^(N-1-i)",
    "d_missing": "the skip term D u left out",
    "downcast64": "float64 silently downcast: computed and returned as float32",
    "upcast32": "float32 silently upcast: computed and returned as float64",
    "f32_compute": "float64 computed with float32 FFTs and returned as float64",
    "nan_zeroed": "NaN and Inf in the FFT convolution's input zeroed/clipped (nan_to_num)",
    "nan_after_gelu": "non-finite GELU outputs zeroed/clipped (nan_to_num after GELU)",
    "dropout_unscaled": "dropout keeps elements without the 1/(1-rate) scaling",
    "dropout_rate": "dropout drops with half the rate asked for",
    "dropout_in_eval": "sgconv.apply drops (rate 0.1) in evaluation, when dropout=0",
    "init_d_zero": "sgconv.init sets D to zeros instead of N(0, 1)",
    "init_mixing_bound": "sgconv.init draws the mixing from U(-sqrt(6)/sqrt(C*H), ...) "
                         "(kaiming_uniform without a=sqrt(5)) instead of nn.Linear's bound",
    "init_multiplier_reversed": "sgconv.init takes the multiplier from the wrong end: "
                                "linspace(decay_max, decay_min, H) (Z computed from it)",
    "grad_forward": "PyTorch backend whose forward under autograd is 1% off (its backward "
                    "exact): a custom autograd Function whose forward disagrees",
}

#: Bugs of the framework layers: bug -> (framework, what it plants).
FRAMEWORK_BUGS = {
    "torch_stale_cache": ("torch", "sgconv.torch.SGConv in eval keeps using the kernel of its "
                                   "first call after the parameters change (a stale cache)"),
    "torch_dropout_in_eval": ("torch", "sgconv.torch.SGConv applies its dropout in eval mode"),
    "jax_deterministic_ignored": ("jax", "sgconv.jax.apply ignores deterministic=True"),
    "jax_prepare_drops_d": ("jax", "sgconv.jax.prepare leaves D out of the prepared spectrum"),
}


def backend_name(bug: str) -> str:
    return f"broken_{bug}"


class BrokenBackend(NumpyBackend):
    """The NumPy backend, named ``broken_<bug>``; subclasses override primitives.  (The 2D
    suite's broken backends, meta/broken2d.py, differ only in these class attributes.)"""

    prefix, bugs, suite = "broken", BUGS, "the meta-tests"

    def __init__(self, bug: str):
        super().__init__()
        self.bug = bug
        self.name = f"{self.prefix}_{bug}"

    def version(self) -> str:
        return f"NumPy backend with a planted bug: {self.bugs[self.bug]}"

    def device_description(self) -> str:
        return f"cpu (deliberately broken, for {self.suite})"


class _AntiShift(BrokenBackend):
    # flip_last only reverses the anti-causal half before it is placed at lags -a..-1;
    # dropping its first element and padding a zero moves k1[j] from lag -(j+1) to -(j+2).
    def flip_last(self, x):
        flipped = x[..., ::-1]
        return np.concatenate([flipped[..., 1:], np.zeros_like(flipped[..., :1])], axis=-1)


class _Downcast64(BrokenBackend):
    def _convert(self, x, dtype):
        x = np.asarray(x, dtype=dtype)
        return x.astype(np.float32) if x.dtype == np.float64 else x

    def cast(self, x, dtype: str):
        return super().cast(x, "float32" if dtype == "float64" else dtype)


class _Upcast32(BrokenBackend):
    def cast(self, x, dtype: str):
        return super().cast(x, "float64" if dtype == "float32" else dtype)


class _Float32Compute(BrokenBackend):
    # Use the base class's FFT convolution so that these two primitives carry every transform.
    fft_conv = Backend.fft_conv

    def rfft(self, x, n: int):
        out = super().rfft(x.astype(np.float32), n)
        return out.astype(np.complex128) if x.dtype == np.float64 else out

    def irfft(self, x, n: int):
        out = super().irfft(x.astype(np.complex64), n)
        return out.astype(np.float64) if x.dtype == np.complex128 else out


class _NanZeroed(BrokenBackend):
    def fft_conv(self, u, k_f, n: int, keep: int):
        return super().fft_conv(np.nan_to_num(u), k_f, n, keep)


class _NanAfterGelu(BrokenBackend):
    def gelu(self, x):
        return np.nan_to_num(super().gelu(x))


class _DropoutUnscaled(BrokenBackend):
    def dropout(self, x, rate: float, rng):
        keep = np.random.default_rng(rng).random(x.shape) >= rate
        return np.where(keep, x, np.zeros((), x.dtype))


class _DropoutRate(BrokenBackend):
    # keeps each element with probability 1 - rate/2, scaled by 1/(1-rate) as if it were right
    def dropout(self, x, rate: float, rng):
        keep = np.random.default_rng(rng).random(x.shape) >= rate / 2
        return np.where(keep, x / np.asarray(1.0 - rate, dtype=x.dtype), np.zeros((), x.dtype))


class _GradForward(TorchBackend):
    """The PyTorch backend, whose FFT convolution under autograd returns 1.01 times the
    result in the forward pass but passes gradients as if it had not (detached term)."""

    def __init__(self, bug: str):
        super().__init__()
        self.bug = bug
        self.name = backend_name(bug)

    def fft_conv(self, u, k_f, n: int, keep: int):
        y = super().fft_conv(u, k_f, n, keep)
        if self.torch.is_grad_enabled() and (u.requires_grad or k_f.requires_grad):
            return y + 0.01 * y.detach()
        return y


_CLASSES = {"anti_shift": _AntiShift, "downcast64": _Downcast64, "upcast32": _Upcast32,
            "f32_compute": _Float32Compute, "nan_zeroed": _NanZeroed,
            "nan_after_gelu": _NanAfterGelu, "dropout_unscaled": _DropoutUnscaled,
            "dropout_rate": _DropoutRate, "grad_forward": _GradForward}


def _has(bk, bug: str) -> bool:
    return isinstance(bk, (BrokenBackend, _GradForward)) and bk.bug == bug


def _named(name, bug: str) -> bool:
    """Whether backend ``name`` (None: the active one) is the broken one with ``bug``."""
    return (name or sgconv.get_backend()) == backend_name(bug)


# --- bugs in the generic math: wrappers of sgconv._ops functions ------------------------------

def _patched(original):
    """The misbehaving versions of the _ops functions, each wrapping ``original[name]``."""

    def plan_fft(bk, length, taps, bidirectional, block_size=None):
        plan = original["plan_fft"](bk, length, taps, bidirectional, block_size)
        if _has(bk, "circular"):
            # One FFT of length L (or just enough to hold the kernel): the tail wraps around.
            return plan._replace(n=max(length, taps + plan.anti_taps), block=None)
        return plan

    def kernel(bk, config, kernels, multiplier, kernel_norm, decay=None, length=None, pad=True):
        if _has(bk, "z_recomputed"):
            kernel_norm = _ops.normaliser(bk, config, kernels, multiplier, decay)
        return original["kernel"](bk, config, kernels, multiplier, kernel_norm, decay, length, pad)

    def _upsample(bk, w, factor, interpolation):
        if not (_has(bk, "align_corners") and interpolation == "linear" and factor > 1):
            return original["_upsample"](bk, w, factor, interpolation)
        d = w.shape[-1]
        x = np.arange(d * factor) * ((d - 1) / (d * factor - 1))          # corners aligned
        lo = np.floor(x).astype(np.int64)
        hi = np.minimum(lo + 1, d - 1)
        frac = bk.asarray(x - lo, dtype=bk.dtype_name(w), like=w)
        w_lo = bk.take(w, lo)
        return w_lo + (bk.take(w, hi) - w_lo) * frac

    def raw_kernel(bk, config, kernels, multiplier, decay=None, length=None):
        if _has(bk, "decay_reversed") and not config.learnable_decay:
            # m^i = m^(N-1) (1/m)^(N-1-i): the correct code with 1/m, times m^(N-1).
            N = config.num_scales
            k = original["raw_kernel"](bk, config, kernels, 1.0 / multiplier, decay, length)
            return k * (multiplier ** (N - 1))[:, None]
        return original["raw_kernel"](bk, config, kernels, multiplier, decay, length)

    def kernel_spectrum(bk, k, D, plan, bidirectional):
        if _has(bk, "d_missing"):
            D = None
        return original["kernel_spectrum"](bk, k, D, plan, bidirectional)

    return {"plan_fft": plan_fft, "kernel": kernel, "_upsample": _upsample,
            "raw_kernel": raw_kernel, "kernel_spectrum": kernel_spectrum}


# --- bugs in public functions: wrappers of sgconv.apply and sgconv.init ---------------------

def _public(original):
    """The misbehaving versions of sgconv's public functions, wrapping ``original[name]``."""

    def apply(params, u, *, dropout=0.0, rng=None, **kwargs):
        if _named(None, "dropout_in_eval") and dropout == 0.0:
            dropout, rng = 0.1, 0
        return original["apply"](params, u, dropout=dropout, rng=rng, **kwargs)

    def init(config, seed=0, *, dtype="float32", backend=None):
        params = original["init"](config, seed, dtype=dtype, backend=backend)
        bk = sgconv.backend(backend)
        like = params.D
        if _named(backend, "init_d_zero"):
            return params.replace(D=bk.asarray(np.zeros(params.D.shape), dtype=dtype, like=like))
        if _named(backend, "init_mixing_bound"):
            return params.replace(out_weight=params.out_weight * np.sqrt(6.0),
                                  out_bias=params.out_bias * np.sqrt(6.0))
        if _named(backend, "init_multiplier_reversed") and not config.learnable_decay:
            state = {k: bk.to_numpy(v) for k, v in sgconv.to_state_dict(params).items()}
            state["multiplier"] = state["multiplier"][:, ::-1].copy()
            del state["kernel_norm"]                     # Z is then computed from the weights
            state["kernel_norm_initialized"] = np.asarray(False)
            fields = dict(l_max=config.l_max, n_scales=config.n_scales,
                          decay_min=config.decay_min, decay_max=config.decay_max,
                          interpolation=config.interpolation)
            return sgconv.from_state_dict(state, dtype=dtype, backend=backend, **fields)
        return params

    return {"apply": apply, "init": init}


_LOCK = threading.Lock()
_ORIGINAL: dict = {}
_PUBLIC: dict = {}
_DEPTH = [0]


def install() -> list[str]:
    """Register every broken backend and patch sgconv._ops, sgconv.apply and sgconv.init;
    returns the backend names.

    Nestable: the patches are removed by the matching number of :func:`uninstall` calls.
    """
    with _LOCK:
        if _DEPTH[0] == 0:
            for attr in ("plan_fft", "kernel", "_upsample", "raw_kernel", "kernel_spectrum"):
                _ORIGINAL[attr] = getattr(_ops, attr)
            for attr, fn in _patched(dict(_ORIGINAL)).items():
                setattr(_ops, attr, fn)
            for attr in ("apply", "init"):
                _PUBLIC[attr] = getattr(sgconv, attr)
            for attr, fn in _public(dict(_PUBLIC)).items():
                setattr(sgconv, attr, fn)
            for bug in BUGS:
                cls = _CLASSES.get(bug, BrokenBackend)
                sgconv.register_backend(backend_name(bug), lambda cls=cls, bug=bug: cls(bug),
                                        replace=True)
        _DEPTH[0] += 1
    return [backend_name(bug) for bug in BUGS]


def uninstall() -> None:
    """Undo :func:`install`: restore the patched functions, unregister the broken backends.

    sgconv has no public way to unregister a backend, so the registry entries are removed
    from sgconv._switch directly (a test-only need).
    """
    with _LOCK:
        if _DEPTH[0] == 0:
            return
        _DEPTH[0] -= 1
        if _DEPTH[0] == 0:
            for attr, fn in _ORIGINAL.items():
                setattr(_ops, attr, fn)
            _ORIGINAL.clear()
            for attr, fn in _PUBLIC.items():
                setattr(sgconv, attr, fn)
            _PUBLIC.clear()
            for bug in BUGS:
                _switch._REGISTRY.pop(backend_name(bug), None)
                _switch._INSTANCES.pop(backend_name(bug), None)


@contextlib.contextmanager
def installed():
    """The broken backends registered and the _ops patches active inside the block."""
    names = install()
    try:
        yield names
    finally:
        uninstall()


# --- bugs in the framework layers -------------------------------------------------------------

def _framework_patch(bug: str):
    """(object, attribute, misbehaving replacement) for a FRAMEWORK_BUGS entry."""
    if bug.startswith("torch_"):
        from sgconv.torch import SGConv
        forward = SGConv.forward
        if bug == "torch_stale_cache":
            def stale(self, u, return_kernel=False):
                # eval: the parameters as they were at the first eval call
                import torch
                if self.training or torch.is_grad_enabled():
                    return forward(self, u, return_kernel)
                first = self.__dict__.setdefault(
                    "_first_state", {k: v.clone() for k, v in self.state_dict().items()})
                now = {k: v.clone() for k, v in self.state_dict().items()}
                self.load_state_dict(first)
                try:
                    return forward(self, u, return_kernel)
                finally:
                    self.load_state_dict(now)
            return SGConv, "forward", stale

        def dropout_in_eval(self, u, return_kernel=False):
            training = self.training
            self.training = True
            try:
                return forward(self, u, return_kernel)
            finally:
                self.training = training
        return SGConv, "forward", dropout_in_eval
    import sgconv.jax as sgj
    if bug == "jax_deterministic_ignored":
        apply = sgj.apply

        def ignores(params, u, *, deterministic=False, key=None, **kwargs):
            return apply(params, u, key=key if key is not None else 0, **kwargs)
        return sgj, "apply", ignores
    prepare = sgj.prepare

    def without_d(params, length, **kwargs):
        params = sgj.as_jax_params(params)
        return prepare(params.replace(D=params.D * 0), length, **kwargs)
    return sgj, "prepare", without_d


@contextlib.contextmanager
def framework_bug(bug: str):
    """FRAMEWORK_BUGS[bug] planted inside the block (its framework must be importable)."""
    importlib.import_module(FRAMEWORK_BUGS[bug][0])
    owner, attr, fn = _framework_patch(bug)
    original = getattr(owner, attr)
    setattr(owner, attr, fn)
    try:
        yield
    finally:
        setattr(owner, attr, original)
