"""2D SGConv parameters: initialisation from a seed and the state-dict layout.

``sgconv.save`` and ``sgconv.load`` (:mod:`sgconv._checkpoint`) store and read them in
the :func:`to_state_dict2d` layout, with ``"kind": "sgconv2d"`` in the stored configuration.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from . import _ops, _params
from ._config2d import SGConv2dConfig
from ._ops2d import ARRAY_NAMES_2D
from ._switch import backend as _backend
from .backends._base import register_structure

__all__ = ["Params2d", "init2d", "to_state_dict2d", "from_state_dict2d"]

_AXES = ("x", "y")


@dataclasses.dataclass(frozen=True)
class Params2d:
    """The arrays of one 2D SGConv layer, with its (static) :class:`SGConv2dConfig`.

    Attributes (per axis a in x, y; C' = 2C):
        kernels_a: tuple of N_a sub-kernels, each (C', H, d).
        multiplier_a: the axis's decay multiplier m, (H,) (ones with a learnable decay).
        kernel_norm_a: the axis's normaliser Z, (C', H): state fixed at init, not trained.
        decay_a: the trained decay exponent (H,) with ``learnable_decay``, else None.
        D: skip weight, (C, H).  out_weight: (H, C*H).  out_bias: (H,).

    The arrays all belong to one backend (:attr:`backend`); :meth:`to` moves them.
    """

    config: SGConv2dConfig
    kernels_x: tuple
    multiplier_x: Any
    kernel_norm_x: Any
    kernels_y: tuple
    multiplier_y: Any
    kernel_norm_y: Any
    D: Any
    out_weight: Any
    out_bias: Any
    decay_x: Any = None
    decay_y: Any = None

    def arrays(self) -> dict:
        """The arrays by name (what the 2D math in sgconv._ops2d takes)."""
        return {name: getattr(self, name) for name in ARRAY_NAMES_2D}

    def replace(self, **changes) -> "Params2d":
        return dataclasses.replace(self, **changes)

    # The same as sgconv.Params's (they read only D and _map): the framework of the arrays
    # ('numpy', 'torch', 'jax', 'cupy'), their dtype name, and to(backend, dtype=None), the
    # same parameters as arrays of another backend (optionally cast).
    backend = _params.Params.backend
    dtype = _params.Params.dtype
    to = _params.Params.to

    def _map(self, fn) -> "Params2d":
        changes = {}
        for name in ARRAY_NAMES_2D:
            value = getattr(self, name)
            if name.startswith("kernels_"):
                changes[name] = tuple(fn(w) for w in value)
            else:
                changes[name] = None if value is None else fn(value)
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        return (f"Params2d({self.config!r}, backend={self.backend!r}, dtype={self.dtype!r}, "
                f"num_parameters={self.config.num_parameters})")


register_structure(Params2d, data=ARRAY_NAMES_2D, static=("config",))


def init2d(config: SGConv2dConfig, seed: int = 0, *, dtype: str = "float32",
           backend: str | None = None) -> Params2d:
    """Fresh 2D parameters per SPEC, the same numbers on every backend for the same seed.

    Draws, in this order, from ``numpy.random.default_rng(seed)`` in float64 (the order of
    ``reference.init_state2d``): the x sub-kernels w_i ~ N(0, 1) of shape (2C, H, d), then
    the y sub-kernels; D ~ N(0, 1) of shape (C, H); the mixing weight (H, C*H) and bias (H,)
    ~ U(-1/sqrt(C*H), 1/sqrt(C*H)); with a learnable decay, decay_x and decay_y ~
    U(decay_min, decay_max) of shape (H,).  Each multiplier is linspace(decay_min,
    decay_max, H) and each axis's Z the row norms of its full raw kernel, computed once
    here in float64.  Arrays are then cast to ``dtype`` on ``backend`` (default: active).
    """
    if not isinstance(config, SGConv2dConfig):
        raise TypeError(f"init2d expects an SGConv2dConfig, got {type(config).__name__}"
                        + ("; for a 1D layer call sgconv.init" if type(config).__name__ ==
                           "SGConvConfig" else ""))
    dtype = _params._check_dtype_name(dtype)
    rng = np.random.default_rng(seed)
    H, C, d = config.d_model, config.channels, config.kernel_dim
    fields = {}
    for a, axis in zip(_AXES, config.axes):
        fields["kernels_" + a] = tuple(rng.standard_normal((2 * C, H, d))
                                       for _ in range(axis.num_scales))
    fields["D"] = rng.standard_normal((C, H))
    bound = 1.0 / np.sqrt(C * H)
    fields["out_weight"] = rng.uniform(-bound, bound, (H, C * H))
    fields["out_bias"] = rng.uniform(-bound, bound, (H,))
    numpy = _backend("numpy")
    for a, axis in zip(_AXES, config.axes):
        if config.learnable_decay:
            fields["decay_" + a] = rng.uniform(config.decay_min, config.decay_max, (H,))
            fields["multiplier_" + a] = np.ones(H)
        else:
            fields["multiplier_" + a] = np.linspace(config.decay_min, config.decay_max, H)
    for a, axis in zip(_AXES, config.axes):
        fields["kernel_norm_" + a] = _ops.normaliser(
            numpy, axis, fields["kernels_" + a], fields["multiplier_" + a],
            fields.get("decay_" + a))                                  # (2C, H)
    bk = _backend(backend)
    return Params2d(config, **fields)._map(lambda x: bk.asarray(x, dtype=dtype))


# --- the state-dict layout (reference.init_state2d's, sgconv.torch.SGConv2d's) ------------------

def to_state_dict2d(params: Params2d) -> dict:
    """The parameters as a flat mapping, the layout of ``sgconv.torch.SGConv2d.state_dict()``:

    per axis a in (x, y): 'kernel_list_a.{i}' (2C, H, d); 'multiplier_a' (1, H, 1) (a 0-d
    1.0 and 'decay_a' (H,) with a learnable decay); 'kernel_norm_a' (2C, H, 1).  Then 'D'
    (C, H), 'output_linear.weight' (H, C*H), 'output_linear.bias' (H,).  Arrays stay on the
    parameters' backend.
    """
    if not isinstance(params, Params2d):
        raise TypeError(f"to_state_dict2d expects sgconv.Params2d, got {type(params).__name__}")
    bk = _params._backend_of(params)
    H = params.config.d_model
    out = {}
    for a in _AXES:
        for i, w in enumerate(getattr(params, "kernels_" + a)):
            out[f"kernel_list_{a}.{i}"] = w
        if params.config.learnable_decay:
            out["multiplier_" + a] = bk.asarray(np.asarray(1.0), dtype=params.dtype,
                                                like=params.D)
            out["decay_" + a] = getattr(params, "decay_" + a)
        else:
            out["multiplier_" + a] = getattr(params, "multiplier_" + a).reshape(1, H, 1)
        out["kernel_norm_" + a] = getattr(params, "kernel_norm_" + a)[..., None]
    out["D"] = params.D
    out["output_linear.weight"] = params.out_weight
    out["output_linear.bias"] = params.out_bias
    return out


def _count(sd: Mapping, prefix: str) -> int:
    n = 0
    while f"{prefix}.{n}" in sd:
        n += 1
    return n


def from_state_dict2d(mapping: Mapping, *, dtype: str | None = None,
                      backend: str | None = None, **config) -> Params2d:
    """2D parameters from a mapping in the :func:`to_state_dict2d` layout.

    H and C are read from 'D', d from 'kernel_list_x.0', N_x and N_y from the number of
    sub-kernels per axis; ``config`` keywords (SGConv2dConfig fields, e.g. ``sizes=``,
    ``decay_min=``) are checked against them, and ``sizes`` defaults to the kernel lengths
    (K_x, K_y).  Arrays of any framework are accepted; unknown or missing keys raise
    ValueError.  dtype: cast to this float dtype (default: keep the stored one).
    """
    if not isinstance(mapping, Mapping):
        raise TypeError(f"from_state_dict2d expects a mapping of arrays, got "
                        f"{type(mapping).__name__}")
    sd = {str(k): _params._any_to_numpy(str(k), v) for k, v in mapping.items()}
    n = {a: _count(sd, "kernel_list_" + a) for a in _AXES}
    learnable = "decay_x" in sd or "decay_y" in sd
    required = {"D", "output_linear.weight", "output_linear.bias"}
    for a in _AXES:
        required |= {"multiplier_" + a, "kernel_norm_" + a} | ({"decay_" + a} if learnable else set())
    missing = sorted(required - set(sd)) + [f"kernel_list_{a}.0" for a in _AXES if not n[a]]
    if missing:
        raise ValueError(f"2D state_dict is missing {missing}; expected the layout of "
                         f"sgconv.to_state_dict2d (sgconv.torch.SGConv2d's state_dict)")
    known = required | {f"kernel_list_{a}.{i}" for a in _AXES for i in range(n[a])}
    unknown = sorted(set(sd) - known)
    if unknown:
        raise ValueError(f"2D state_dict has unexpected keys {unknown}; expected only "
                         f"{sorted(known)}")
    D = sd["D"]
    if D.ndim != 2:
        raise ValueError(f"2D state_dict entry 'D' has shape {D.shape}, expected (C, H)")
    C, H = D.shape
    w0 = sd["kernel_list_x.0"]
    if w0.ndim != 3 or w0.shape[:2] != (2 * C, H):
        raise ValueError(f"2D state_dict entry 'kernel_list_x.0' has shape {w0.shape}, "
                         f"expected (2C, H, d) = ({2 * C}, {H}, d) for D of shape {D.shape}")
    d = w0.shape[2]
    inferred = dict(d_model=H, channels=C, kernel_dim=d, learnable_decay=learnable)
    if config.get("n_scales") is not None:
        given = SGConv2dConfig(H, (1, 1), n_scales=config["n_scales"]).n_scales
        if given != (n["x"], n["y"]):
            raise ValueError(f"from_state_dict2d: n_scales={config['n_scales']!r} was given but "
                             f"the arrays hold {n['x']} x and {n['y']} y sub-kernels")
    for key, value in inferred.items():
        if key in config and config[key] is not None and config[key] != value:
            raise ValueError(f"from_state_dict2d: {key}={config[key]!r} was given but the "
                             f"arrays say {key}={value!r}")
    fields = {f.name for f in dataclasses.fields(SGConv2dConfig)}
    bad = sorted(set(config) - fields)
    if bad:
        raise TypeError(f"from_state_dict2d got unknown configuration keywords {bad}; "
                        f"expected SGConv2dConfig fields {sorted(fields)}")
    kwargs = {**config, **inferred}
    kwargs.setdefault("sizes", (d * 2 ** (n["x"] - 1), d * 2 ** (n["y"] - 1)))
    cfg = SGConv2dConfig(**kwargs)
    if cfg.num_scales != (n["x"], n["y"]):  # the sizes alone derive other N: keep the arrays'
        cfg = dataclasses.replace(cfg, n_scales=(n["x"], n["y"]))
    values = {}
    for a in _AXES:
        ws = tuple(sd[f"kernel_list_{a}.{i}"] for i in range(n[a]))
        for i, w in enumerate(ws):
            _params._expect_shape(f"kernel_list_{a}.{i}", w, (2 * C, H, d))
        values["kernels_" + a] = ws
        _params._expect_shape("kernel_norm_" + a, sd["kernel_norm_" + a], (2 * C, H, 1))
        values["kernel_norm_" + a] = sd["kernel_norm_" + a].reshape(2 * C, H)
        if learnable:
            _params._expect_shape("decay_" + a, sd["decay_" + a], (H,))
            if sd["multiplier_" + a].size != 1 or float(sd["multiplier_" + a]) != 1.0:
                raise ValueError(f"learnable-decay state_dict: expected 'multiplier_{a}' to be "
                                 f"the scalar 1")
            values["decay_" + a] = sd["decay_" + a]
            values["multiplier_" + a] = np.ones(H, dtype=D.dtype)
        else:
            _params._expect_shape("multiplier_" + a, sd["multiplier_" + a], (1, H, 1))
            values["multiplier_" + a] = sd["multiplier_" + a].reshape(H)
    _params._expect_shape("output_linear.weight", sd["output_linear.weight"], (H, C * H))
    _params._expect_shape("output_linear.bias", sd["output_linear.bias"], (H,))
    dtype = _params._check_dtype_name(dtype) if dtype is not None else D.dtype.name
    bk = _backend(backend)
    params = Params2d(cfg, D=D, out_weight=sd["output_linear.weight"],
                      out_bias=sd["output_linear.bias"], **values)
    return params._map(lambda x: bk.asarray(x, dtype=dtype))
