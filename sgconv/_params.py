"""SGConv parameters: initialisation from a seed and the released checkpoint layout."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from . import _ops
from ._config import SGConvConfig
from ._switch import backend as _backend, known_backends
from .backends._base import array_framework, register_structure

__all__ = ["Params", "init", "from_state_dict", "to_state_dict"]

_ARRAY_FIELDS = _ops.ARRAY_NAMES


@dataclasses.dataclass(frozen=True)
class Params:
    """The arrays of one SGConv layer, with its (static) configuration.

    Attributes (shapes per shared/SPEC.md):
        config: the :class:`SGConvConfig`.
        kernels: tuple of N sub-kernels w_i, each (C', H, d).
        multiplier: decay multiplier m, (H,) (ones in learnable-decay mode).
        kernel_norm: the normalisation Z, (C', H): state computed once at init, not trained.
        D: skip weight, (C, H).
        out_weight: mixing linear weight, (H, C*H).
        out_bias: mixing linear bias, (H,).
        decay: the trained decay exponent, (H,), in learnable-decay mode; else None.

    The arrays all belong to one backend (see :attr:`backend`); :meth:`to` moves them.
    """

    config: SGConvConfig
    kernels: tuple
    multiplier: Any
    kernel_norm: Any
    D: Any
    out_weight: Any
    out_bias: Any
    decay: Any = None

    def arrays(self) -> dict:
        """The arrays by name (what the generic math in sgconv._ops takes)."""
        return {name: getattr(self, name) for name in _ARRAY_FIELDS}

    def replace(self, **changes) -> "Params":
        return dataclasses.replace(self, **changes)

    @property
    def backend(self) -> str:
        """The framework the arrays belong to: 'numpy', 'torch', 'jax', 'cupy', ..."""
        return array_framework(self.D) or "numpy"

    @property
    def dtype(self) -> str:
        return _backend_of(self).dtype_name(self.D)

    def to(self, backend: str, dtype: str | None = None) -> "Params":
        """The same parameters as arrays of ``backend`` (optionally cast to ``dtype``)."""
        source, target = _backend_of(self), _backend(backend)
        if source.name == target.name:
            move = lambda x: target.asarray(x, dtype=dtype)  # noqa: E731
        else:
            move = lambda x: target.asarray(source.to_numpy(x), dtype=dtype)  # noqa: E731
        return self._map(move)

    def _map(self, fn) -> "Params":
        return dataclasses.replace(
            self,
            kernels=tuple(fn(w) for w in self.kernels),
            **{name: (None if getattr(self, name) is None else fn(getattr(self, name)))
               for name in _ARRAY_FIELDS if name != "kernels"})

    def __repr__(self) -> str:
        return (f"Params({self.config!r}, backend={self.backend!r}, dtype={self.dtype!r}, "
                f"num_parameters={self.config.num_parameters})")


register_structure(Params, data=_ARRAY_FIELDS, static=("config",))


def _backend_of(params: Params):
    name = params.backend
    return _backend(name if name in known_backends() else None)


def _check_dtype_name(dtype) -> str:
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in ("float16", "bfloat16", "float32", "float64"):
        raise TypeError(f"parameter dtype must be one of float16, bfloat16, float32, float64; "
                        f"got {dtype!r}")
    return name


def init(config: SGConvConfig, seed: int = 0, *, dtype: str = "float32",
         backend: str | None = None) -> Params:
    """Fresh parameters per SPEC, the same numbers on every backend for the same seed.

    Draws, in this order, from ``numpy.random.default_rng(seed)`` in float64: the N
    sub-kernels w_i ~ N(0, 1) of shape (C', H, d); D ~ N(0, 1) of shape (C, H); the
    mixing weight and bias ~ U(-1/sqrt(C*H), 1/sqrt(C*H)) (PyTorch's nn.Linear bounds);
    in learnable-decay mode, decay ~ U(decay_min, decay_max) of shape (H,).  The decay
    multiplier is linspace(decay_min, decay_max, H), and Z is the norm of each row of
    the full raw kernel, computed once here in float64.  Arrays are then cast to
    ``dtype`` and created on ``backend`` (default: the active one).
    """
    if not isinstance(config, SGConvConfig):
        raise TypeError(f"init expects an SGConvConfig, got {type(config).__name__}")
    dtype = _check_dtype_name(dtype)
    rng = np.random.default_rng(seed)
    H, C, Cp, d = config.d_model, config.channels, config.kernel_rows, config.kernel_dim
    kernels = tuple(rng.standard_normal((Cp, H, d)) for _ in range(config.num_scales))
    D = rng.standard_normal((C, H))
    bound = 1.0 / np.sqrt(C * H)
    out_weight = rng.uniform(-bound, bound, (H, C * H))
    out_bias = rng.uniform(-bound, bound, (H,))
    if config.learnable_decay:
        decay = rng.uniform(config.decay_min, config.decay_max, (H,))
        multiplier = np.ones(H)
    else:
        decay = None
        multiplier = np.linspace(config.decay_min, config.decay_max, H)
    kernel_norm = _ops.normaliser(_backend("numpy"), config, kernels, multiplier, decay)
    params = Params(config, kernels, multiplier, kernel_norm, D, out_weight, out_bias, decay)
    bk = _backend(backend)
    return params._map(lambda x: bk.asarray(x, dtype=dtype))


# --- the released module's state_dict layout ------------------------------------------------

def _any_to_numpy(name: str, x) -> np.ndarray:
    """Arrays of any framework to NumPy: checkpoints are interchange, so all are accepted."""
    owner = array_framework(x)
    if owner is not None and owner != "numpy" and owner in known_backends():
        return np.asarray(_backend(owner).to_numpy(x))
    arr = np.asarray(x)
    if arr.dtype == object:
        raise TypeError(f"state_dict entry {name!r}: expected an array, got {type(x).__name__}")
    return arr


def to_state_dict(params: Params) -> dict:
    """The parameters laid out as the authors' released module saves them (SPEC).

    Keys: 'D' (C, H); 'kernel_list.{i}' (C', H, d); 'multiplier' (1, H, 1) (or a 0-d 1.0 and
    'decay' (H,) in learnable mode); 'kernel_norm' (C', H, 1); 'kernel_norm_initialized'
    (0-d bool, True); 'output_linear.weight' (H, C*H); 'output_linear.bias' (H,).  Arrays
    stay on the parameters' backend.
    """
    if not isinstance(params, Params):
        raise TypeError(f"to_state_dict expects sgconv.Params, got {type(params).__name__}")
    bk = _backend_of(params)
    H = params.config.d_model
    out = {"D": params.D}
    for i, w in enumerate(params.kernels):
        out[f"kernel_list.{i}"] = w
    if params.config.learnable_decay:
        out["multiplier"] = bk.asarray(np.asarray(1.0), dtype=params.dtype, like=params.D)
        out["decay"] = params.decay
    else:
        out["multiplier"] = params.multiplier.reshape(1, H, 1)
    out["kernel_norm"] = params.kernel_norm[..., None]
    out["kernel_norm_initialized"] = bk.asarray(np.asarray(True), like=params.D)
    out["output_linear.weight"] = params.out_weight
    out["output_linear.bias"] = params.out_bias
    return out


def _expect_shape(name, arr, shape):
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"state_dict entry {name!r} has shape {tuple(arr.shape)}, expected "
                         f"{tuple(shape)} for this configuration")


def from_state_dict(mapping: Mapping, *, dtype: str | None = None, backend: str | None = None,
                    **config) -> Params:
    """Parameters from a mapping laid out as the released module's state_dict.

    Sizes are read off the arrays (H and C from 'D', C' and d from 'kernel_list.0', N from
    the number of 'kernel_list.*' entries); ``config`` keywords (any SGConvConfig field,
    e.g. ``l_max=``, ``decay_min=``) are checked against them, and ``l_max`` defaults to the
    kernel length K.  Arrays of any framework are accepted.  A checkpoint whose
    'kernel_norm_initialized' is False never ran forward; its Z is computed from its
    weights here, as the released module would on its first call.  Unknown or missing
    keys raise ValueError.  dtype: cast to this float dtype (default: keep the stored one).
    """
    return _from_state_dict(mapping, dtype, backend, config,
                            given="from_state_dict: {key}={value!r} was given")


def _from_state_dict(mapping: Mapping, dtype, backend, config: dict, given: str) -> Params:
    """:func:`from_state_dict`, with ``given`` (a format of key and value) saying where a
    configuration value that the arrays contradict came from (sgconv.load: the file)."""
    if not isinstance(mapping, Mapping):
        raise TypeError(f"from_state_dict expects a mapping of arrays, got {type(mapping).__name__}")
    sd = {str(k): _any_to_numpy(str(k), v) for k, v in mapping.items()}
    n = 0
    while f"kernel_list.{n}" in sd:
        n += 1
    required = {"D", "multiplier", "output_linear.weight", "output_linear.bias"}
    missing = sorted(required - set(sd)) + ([] if n else ["kernel_list.0"])
    if missing:
        raise ValueError(f"state_dict is missing {missing}; expected the released SGConv "
                         f"layout (see sgconv.to_state_dict)")
    learnable = "decay" in sd
    known = ({f"kernel_list.{i}" for i in range(n)} | required
             | {"kernel_norm", "kernel_norm_initialized", "decay"})
    unknown = sorted(set(sd) - known)
    if unknown:
        raise ValueError(f"state_dict has unexpected keys {unknown}; expected only {sorted(known)}")
    D = sd["D"]
    if D.ndim != 2:
        raise ValueError(f"state_dict entry 'D' has shape {D.shape}, expected (C, H)")
    C, H = D.shape
    w0 = sd["kernel_list.0"]
    if w0.ndim != 3:
        raise ValueError(f"state_dict entry 'kernel_list.0' has shape {w0.shape}, expected (C', H, d)")
    Cp, _, d = w0.shape
    if Cp not in (C, 2 * C):
        raise ValueError(f"'kernel_list.0' has {Cp} rows but 'D' has C={C}: expected C or 2C rows")
    inferred = dict(d_model=H, channels=C, kernel_dim=d, bidirectional=Cp == 2 * C,
                    learnable_decay=learnable)
    if config.get("n_scales") is not None and config["n_scales"] != n:
        raise ValueError(f"{given.format(key='n_scales', value=config['n_scales'])} but the "
                         f"arrays hold {n} kernel_list entries")
    for key, value in inferred.items():
        if key in config and config[key] is not None and config[key] != value:
            raise ValueError(f"{given.format(key=key, value=config[key])} but the arrays "
                             f"say {key}={value!r}")
    fields = {f.name for f in dataclasses.fields(SGConvConfig)}
    bad = sorted(set(config) - fields)
    if bad:
        raise TypeError(f"from_state_dict got unknown configuration keywords {bad}; "
                        f"expected SGConvConfig fields {sorted(fields)}")
    cfg_kwargs = {**config, **inferred}
    cfg_kwargs.setdefault("l_max", d * 2 ** (n - 1))
    cfg = SGConvConfig(**cfg_kwargs)
    if cfg.num_scales != n:  # l_max alone would derive another N: keep the checkpoint's
        cfg = dataclasses.replace(cfg, n_scales=n)
    kernels = tuple(sd[f"kernel_list.{i}"] for i in range(n))
    for i, w in enumerate(kernels):
        _expect_shape(f"kernel_list.{i}", w, (Cp, H, d))
    _expect_shape("output_linear.weight", sd["output_linear.weight"], (H, C * H))
    _expect_shape("output_linear.bias", sd["output_linear.bias"], (H,))
    if learnable:
        _expect_shape("decay", sd["decay"], (H,))
        decay, multiplier = sd["decay"], np.ones(H, dtype=D.dtype)
        if sd["multiplier"].size != 1 or float(sd["multiplier"]) != 1.0:
            raise ValueError("learnable-decay checkpoint: expected 'multiplier' to be the scalar 1")
    else:
        decay = None
        _expect_shape("multiplier", sd["multiplier"], (1, H, 1))
        multiplier = sd["multiplier"].reshape(H)
    initialised = bool(sd.get("kernel_norm_initialized", np.asarray("kernel_norm" in sd)))
    if initialised:
        if "kernel_norm" not in sd:
            raise ValueError("state_dict says kernel_norm_initialized but has no 'kernel_norm'")
        _expect_shape("kernel_norm", sd["kernel_norm"], (Cp, H, 1))
        kernel_norm = sd["kernel_norm"].reshape(Cp, H)
    else:
        kernel_norm = _ops.normaliser(
            _backend("numpy"), cfg, tuple(w.astype(np.float64) for w in kernels),
            multiplier.astype(np.float64), None if decay is None else decay.astype(np.float64))
    dtype = _check_dtype_name(dtype) if dtype is not None else D.dtype.name
    bk = _backend(backend)
    params = Params(cfg, kernels, multiplier, kernel_norm, D, sd["output_linear.weight"],
                    sd["output_linear.bias"], decay)
    return params._map(lambda x: bk.asarray(x, dtype=dtype))
