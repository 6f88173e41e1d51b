"""The SGConv sequence model in JAX: pure functions over a pytree, the same numbers as PyTorch.

::

    import jax, sgconv, sgconv.jax.models as sjm
    config = sgconv.ModelConfig(vocab_size=18, d_output=10, d_model=64, n_layers=4,
                                l_max=512, kernel_dim=1, bidirectional=True)
    model = sjm.SequenceModel.init(jax.random.key(0), config)
    logits = model(tokens, mask)                     # evaluation: (B, L) ids -> (B, 10)
    logits, model = sjm.apply(model, tokens, mask, train=True, key=jax.random.key(1))

    model = sjm.SequenceModel.from_torch(torch_model)   # a sgconv.torch.SequenceModel's weights

:class:`SequenceModel` is the model of :class:`sgconv.torch.SequenceModel` (same
:class:`sgconv.ModelConfig`; the SGConv layer only, not the baselines): token embedding or
linear encoder, ``n_layers`` SGConv blocks (norm before or after, SGConv through
:func:`sgconv.jax.apply`, GLU, dropout, residual, padding zeroed before every layer and
left out of batch-norm statistics), final norm for pre-norm models, mean or last-position
pooling, linear decoder or the retrieval head.  Its arrays are named as the PyTorch
model's ``state_dict`` keys: ``params`` holds the trained ones, ``state`` the buffers (SGConv's
decay multiplier and Z, batch norm's running statistics), so weights move both ways with
:meth:`SequenceModel.from_state_dict` and :meth:`SequenceModel.to_state_dict`.

It is a pytree (config static): ``jax.grad(loss)(model)`` returns a model of gradients
whose ``state`` is zero, and an optimiser updates ``model.params``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .._config import SGConvConfig
from .._model_config import ModelConfig
from .._params import Params
from ..backends._base import array_framework
from ._functional import apply as sgconv_apply, init as sgconv_init

__all__ = ["SequenceModel", "apply", "names"]

_EPS = 1e-5          # the norms' epsilon (PyTorch's default)
_MOMENTUM = 0.1      # batch norm's running-statistics momentum (PyTorch's default)


def _sgconv_config(cfg: ModelConfig) -> SGConvConfig:
    return SGConvConfig(d_model=cfg.d_model, l_max=cfg.l_max, channels=cfg.channels,
                        kernel_dim=cfg.kernel_dim, n_scales=cfg.n_scales,
                        decay_min=cfg.decay_min, decay_max=cfg.decay_max,
                        bidirectional=cfg.bidirectional)


def _check_config(config) -> ModelConfig:
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a sgconv.ModelConfig, got {type(config).__name__}")
    if config.layer != "sgconv":
        raise ValueError(f"sgconv.jax.models builds SGConv models only, got layer="
                         f"{config.layer!r} (the baselines are in sgconv.torch.baselines)")
    return config


def names(config: ModelConfig) -> tuple[dict, dict]:
    """({parameter name: shape}, {buffer name: shape}): the PyTorch model's state_dict
    layout, less SGConv's ``kernel_norm_initialized`` flags (always True here: Z is computed
    at init), so that every leaf of a model is a float array and ``jax.grad`` takes it whole."""
    cfg = _check_config(config)
    H, C = cfg.d_model, cfg.channels
    sg = _sgconv_config(cfg)
    Cp, N, d = sg.kernel_rows, sg.num_scales, sg.kernel_dim
    params, buffers = {}, {}
    if cfg.vocab_size is not None:
        params["encoder.weight"] = (cfg.vocab_size, H)
    else:
        params["encoder.weight"], params["encoder.bias"] = (H, cfg.d_input), (H,)

    def norm(prefix):
        params[prefix + "weight"], params[prefix + "bias"] = (H,), (H,)
        if cfg.norm == "batch":
            buffers[prefix + "running_mean"], buffers[prefix + "running_var"] = (H,), (H,)
            buffers[prefix + "num_batches_tracked"] = ()

    H_out = 2 * H if cfg.postact == "glu" else H
    mixing = "output_linear.0." if cfg.postact == "glu" else "output_linear."
    for i in range(cfg.n_layers):
        p = f"blocks.{i}.layer."
        params[p + "D"] = (C, H)
        params[p + mixing + "weight"], params[p + mixing + "bias"] = (H_out, C * H), (H_out,)
        for j in range(N):
            params[p + f"kernel_list.{j}"] = (Cp, H, d)
        buffers[p + "multiplier"], buffers[p + "kernel_norm"] = (1, H, 1), (Cp, H, 1)
        norm(f"blocks.{i}.norm.")
    if cfg.prenorm:
        norm("norm.")
    if cfg.retrieval:
        params["decoder.0.weight"], params["decoder.0.bias"] = (H, 4 * H), (H,)
        params["decoder.2.weight"], params["decoder.2.bias"] = (cfg.d_output, H), (cfg.d_output,)
    else:
        params["decoder.weight"], params["decoder.bias"] = (cfg.d_output, H), (cfg.d_output,)
    return params, buffers


def _to_numpy(x):
    """A copy on the host (never a view: a torch buffer updated later must not change it)."""
    if array_framework(x) == "torch":
        return x.detach().cpu().numpy().copy()
    return np.array(x, copy=True)


@jax.tree_util.register_pytree_with_keys_class
class SequenceModel:
    """An SGConv sequence model: ``config`` (static), ``params`` and ``state`` (dicts of arrays
    named as the PyTorch model's state_dict).  Immutable; calling it evaluates it."""

    __slots__ = ("config", "params", "state")

    def __init__(self, config: ModelConfig, params: dict, state: dict):
        _check_config(config)
        want_p, want_b = names(config)
        for kind, got, want in (("parameter", params, want_p), ("buffer", state, want_b)):
            missing = sorted(set(want) - set(got))
            unexpected = sorted(set(got) - set(want))
            if missing or unexpected:
                raise ValueError(f"the {kind}s do not match the configuration: missing "
                                 f"{missing[:6]}{' ...' if len(missing) > 6 else ''}, unexpected "
                                 f"{unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}")
            for name, shape in want.items():
                if tuple(np.shape(got[name])) != tuple(shape):
                    raise ValueError(f"{kind} {name!r} has shape {tuple(np.shape(got[name]))}, "
                                     f"the configuration needs {tuple(shape)}")
        set_ = object.__setattr__
        set_(self, "config", config)
        set_(self, "params", dict(params))
        set_(self, "state", dict(state))

    def __setattr__(self, name, value):
        raise AttributeError("SequenceModel is immutable (a pytree); build a new one")

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def init(cls, key, config: ModelConfig, dtype=jnp.float32) -> "SequenceModel":
        """Fresh weights drawn with ``jax.random`` (PyTorch's distributions, other numbers):
        embeddings N(0, 1), linears U(-1/sqrt(fan_in), 1/sqrt(fan_in)), SGConv layers by
        :func:`sgconv.jax.init` (the GLU's 2H-row output linear drawn like a linear), norms
        weight 1 and bias 0."""
        cfg = _check_config(config)
        if isinstance(key, int) and not isinstance(key, bool):
            key = jax.random.key(key)
        want_p, want_b = names(cfg)
        keys = iter(jax.random.split(key, 4 * len(want_p) + 4))
        params, state = {}, {}

        def uniform(shape, fan_in):
            bound = 1.0 / math.sqrt(fan_in)
            return jax.random.uniform(next(keys), shape, dtype, -bound, bound)

        sg = _sgconv_config(cfg)
        for name, shape in want_p.items():
            if name == "encoder.weight" and cfg.vocab_size is not None:
                params[name] = jax.random.normal(next(keys), shape, dtype)
            elif name.endswith("norm.weight"):
                params[name] = jnp.ones(shape, dtype)
            elif name.endswith("norm.bias"):
                params[name] = jnp.zeros(shape, dtype)
            elif ".layer." in name:
                continue                                    # below, one layer at a time
            else:                                           # a linear's weight or bias
                weight = name[:-len("bias")] + "weight" if name.endswith("bias") else name
                params[name] = uniform(shape, want_p[weight][1])
        for i in range(cfg.n_layers):
            p = f"blocks.{i}.layer."
            layer = sgconv_init(next(keys), sg, dtype)
            params[p + "D"] = layer.D
            for j, w in enumerate(layer.kernels):
                params[p + f"kernel_list.{j}"] = w
            mixing = "output_linear.0." if cfg.postact == "glu" else "output_linear."
            fan_in = cfg.channels * cfg.d_model
            params[p + mixing + "weight"] = uniform(want_p[p + mixing + "weight"], fan_in)
            params[p + mixing + "bias"] = uniform(want_p[p + mixing + "bias"], fan_in)
            state[p + "multiplier"] = layer.multiplier.reshape(1, -1, 1)
            state[p + "kernel_norm"] = layer.kernel_norm[..., None]
        for name, shape in want_b.items():
            if name.endswith("running_mean"):
                state[name] = jnp.zeros(shape, dtype)
            elif name.endswith("running_var"):
                state[name] = jnp.ones(shape, dtype)
            elif name.endswith("num_batches_tracked"):
                state[name] = jnp.zeros((), dtype)          # a count, held as a float leaf
        return cls(cfg, params, state)

    @classmethod
    def from_state_dict(cls, config: ModelConfig, state_dict, dtype=None) -> "SequenceModel":
        """The model with the weights of a PyTorch ``SequenceModel.state_dict()`` (tensors or
        arrays of any framework), cast to ``dtype`` (default: as stored; float32 for
        PyTorch's float32)."""
        want_p, want_b = names(_check_config(config))
        arrays = {k: _to_numpy(v) for k, v in state_dict.items()}
        for name in [k for k in arrays if k.endswith("kernel_norm_initialized")]:
            if not bool(arrays.pop(name)):
                raise ValueError(f"{name} is False: this SGConv layer's Z was never computed; "
                                 f"load the state_dict into sgconv.torch.SequenceModel first "
                                 f"(it computes Z on load), then convert")
        if dtype is None:
            dtype = arrays["encoder.weight"].dtype if "encoder.weight" in arrays else None

        def convert(name, x):
            if name.endswith("num_batches_tracked"):
                return jnp.asarray(x, dtype)                # a count, held as a float leaf
            return jnp.asarray(x, dtype)

        params = {k: convert(k, v) for k, v in arrays.items() if k in want_p}
        state = {k: convert(k, v) for k, v in arrays.items() if k in want_b}
        extra = sorted(set(arrays) - set(want_p) - set(want_b))
        if extra:
            raise ValueError(f"the state_dict has keys this configuration does not use: "
                             f"{extra[:6]}; is it the state_dict of a model with this config?")
        return cls(config, params, state)

    @classmethod
    def from_torch(cls, module, dtype=None) -> "SequenceModel":
        """The model of a :class:`sgconv.torch.SequenceModel` (its config and weights)."""
        return cls.from_state_dict(module.config, module.state_dict(), dtype)

    def to_state_dict(self) -> dict:
        """{name: NumPy array}: loads into ``sgconv.torch.SequenceModel(config)`` (convert
        with torch.as_tensor), with the flags and counts PyTorch keeps."""
        out = {k: np.asarray(v) for k, v in {**self.params, **self.state}.items()}
        for name in list(out):
            if name.endswith("num_batches_tracked"):
                out[name] = out[name].astype(np.int64)
            if name.endswith(".layer.multiplier"):
                out[name[:-len("multiplier")] + "kernel_norm_initialized"] = np.array(True)
        return out

    # --- use ----------------------------------------------------------------------------

    def __call__(self, x, mask=None, x2=None, mask2=None):
        """Evaluation: (B, d_output) for x (B, L) ids or (B, L, d_input), mask (B, L) bool."""
        out, _ = apply(self, x, mask, x2, mask2, train=False)
        return out

    def trainable(self) -> "SequenceModel":
        """A mask pytree: True on ``params`` leaves, False on ``state`` (for optax.masked)."""
        return self.tree_unflatten(self.config, (jax.tree.map(lambda _: True, self.params),
                                                 jax.tree.map(lambda _: False, self.state)))

    def num_parameters(self) -> int:
        return int(sum(np.size(v) for v in self.params.values()))

    # --- pytree -------------------------------------------------------------------------

    def tree_flatten_with_keys(self):
        return (((jax.tree_util.GetAttrKey("params"), self.params),
                 (jax.tree_util.GetAttrKey("state"), self.state)), self.config)

    @classmethod
    def tree_unflatten(cls, config, children):
        obj = object.__new__(cls)
        object.__setattr__(obj, "config", config)
        object.__setattr__(obj, "params", children[0])
        object.__setattr__(obj, "state", children[1])
        return obj

    def __repr__(self) -> str:
        return f"SequenceModel({self.config!r}, num_parameters={self.num_parameters()})"


# --- the forward pass -------------------------------------------------------------------------

def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_input(cfg: ModelConfig, x, mask, name: str):
    x = jnp.asarray(x)
    if cfg.vocab_size is not None:
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise TypeError(f"{name} must hold integer token ids (B, L) for a model with "
                            f"vocab_size={cfg.vocab_size}, got dtype {x.dtype}")
        if x.ndim != 2:
            raise ValueError(f"{name} must be token ids of shape (B, L), got {x.shape}")
        ids = np.asarray(x) if _concrete(x) else None       # checked on the host, not traced
        if ids is not None and ids.size and (ids.min() < 0 or ids.max() >= cfg.vocab_size):
            raise ValueError(f"{name} holds token ids outside [0, vocab_size={cfg.vocab_size})")
    else:
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{name} must be real-valued (B, L, d_input={cfg.d_input}), got "
                            f"dtype {x.dtype}")
        if x.ndim != 3 or x.shape[-1] != cfg.d_input:
            raise ValueError(f"{name} must have shape (B, L, d_input={cfg.d_input}), got "
                             f"{x.shape}")
    B, L = x.shape[0], x.shape[1]
    if L == 0:
        raise ValueError(f"{name} has length L=0; expected L >= 1")
    if mask is None:
        return x, None
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"mask must be a bool array (True on valid positions), got dtype "
                        f"{mask.dtype}")
    if mask.shape != (B, L):
        raise ValueError(f"mask must have shape (B, L) = {(B, L)} like the input, got "
                         f"{mask.shape}")
    if _concrete(mask):
        host = np.asarray(mask)                             # checked on the host, not traced
        lengths = host.sum(-1)
        if (lengths == 0).any():
            raise ValueError("mask has a row with no valid position; every sequence needs at "
                             "least one")
        if not (host == (np.arange(L)[None, :] < lengths[:, None])).all():
            raise ValueError("mask must mark a prefix of each row (valid positions first, "
                             "padding at the end)")
    return x, mask


def _dropout(x, rate: float, key):
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _norm(cfg, params, state, prefix, h, mask, train, new_state):
    """(B, H, L) -> (B, H, L); batch statistics over the valid positions in training."""
    w, b = params[prefix + "weight"][:, None], params[prefix + "bias"][:, None]
    if cfg.norm == "layer":
        mean = h.mean(1, keepdims=True)
        var = ((h - mean) ** 2).mean(1, keepdims=True)
        return (h - mean) * jax.lax.rsqrt(var + _EPS) * w + b
    if not train:
        mean, var = state[prefix + "running_mean"], state[prefix + "running_var"]
        return (h - mean[:, None]) * jax.lax.rsqrt(var[:, None] + _EPS) * w + b
    m = jnp.ones((h.shape[0], 1, h.shape[2]), h.dtype) if mask is None \
        else mask[:, None, :].astype(h.dtype)                                 # (B, 1, L)
    count = m.sum()
    mean = (h * m).sum((0, 2)) / count                                        # (H,)
    var = (((h - mean[:, None]) ** 2) * m).sum((0, 2)) / count                # (H,) biased
    unbiased = jax.lax.stop_gradient(var * count / jnp.maximum(count - 1, 1))
    for name, value in (("running_mean", jax.lax.stop_gradient(mean)), ("running_var", unbiased)):
        old = state[prefix + name]
        new_state[prefix + name] = old + _MOMENTUM * (value.astype(old.dtype) - old)
    new_state[prefix + "num_batches_tracked"] = state[prefix + "num_batches_tracked"] + 1
    return (h - mean[:, None]) * jax.lax.rsqrt(var[:, None] + _EPS) * w + b


def _layer(cfg, params, state, prefix, z, train, key):
    """The SGConv layer with the model's output linear (and GLU): (B, H, L) -> (B, H, L)."""
    sg = _sgconv_config(cfg)
    mixing = "output_linear.0." if cfg.postact == "glu" else "output_linear."
    layer = Params(sg, tuple(params[prefix + f"kernel_list.{j}"] for j in range(sg.num_scales)),
                   state[prefix + "multiplier"].reshape(-1),
                   state[prefix + "kernel_norm"].reshape(sg.kernel_rows, sg.d_model),
                   params[prefix + "D"], params[prefix + mixing + "weight"],
                   params[prefix + mixing + "bias"])
    rate = cfg.dropout if train else 0.0
    y = sgconv_apply(layer, z, dropout=rate, key=key if rate > 0 else None,
                     deterministic=not train)                                  # (B, H or 2H, L)
    if cfg.postact == "glu":
        a, g = jnp.split(y, 2, axis=1)
        y = a * jax.nn.sigmoid(g)                                               # (B, H, L)
    return y


def _features(model: SequenceModel, x, mask, train: bool, key, new_state: dict):
    cfg, params, state = model.config, model.params, model.state
    if cfg.vocab_size is not None:
        h = params["encoder.weight"][x]                                        # (B, L, H)
    else:
        h = x @ params["encoder.weight"].T + params["encoder.bias"]           # (B, L, H)
    h = h.swapaxes(1, 2)                                                        # (B, H, L)
    keys = jax.random.split(key, 2 * cfg.n_layers) if key is not None else None
    for i in range(cfg.n_layers):
        norm = f"blocks.{i}.norm."
        z = _norm(cfg, params, state, norm, h, mask, train, new_state) if cfg.prenorm else h
        if mask is not None:
            z = jnp.where(mask[:, None, :], z, 0.0)                            # padding -> 0
        y = _layer(cfg, params, state, f"blocks.{i}.layer.", z, train,
                   None if keys is None else keys[2 * i])
        if train and cfg.dropout > 0:
            y = _dropout(y, cfg.dropout, keys[2 * i + 1])
        h = h + y
        if not cfg.prenorm:
            h = _norm(cfg, params, state, norm, h, mask, train, new_state)
    if cfg.prenorm:
        h = _norm(cfg, params, state, "norm.", h, mask, train, new_state)
    return h


def _pool(cfg, h, mask):
    if cfg.pool == "mean":
        if mask is None:
            return h.mean(-1)
        m = mask[:, None, :].astype(h.dtype)
        return (h * m).sum(-1) / m.sum(-1)
    if mask is None:
        return h[..., -1]
    last = mask.sum(-1) - 1
    return h[jnp.arange(h.shape[0]), :, last]


def apply(model: SequenceModel, x, mask=None, x2=None, mask2=None, *, train: bool = False,
          key=None):
    """The model on a batch: returns (outputs (B, d_output), model with updated state).

    x: (B, L) int token ids, or (B, L, d_input) real; mask: (B, L) bool marking the valid
    prefix of each sequence (None: all valid); x2/mask2: the pair's second sequences for
    retrieval models.  train: batch statistics (and their running averages in the returned
    model's state) and dropout, which needs ``key`` when ModelConfig.dropout > 0; else the
    stored statistics and no dropout (the returned model is the same).  Works under jit
    (the mask's prefix check runs only on concrete masks) and grad.
    """
    if not isinstance(model, SequenceModel):
        raise TypeError(f"apply expects a SequenceModel, got {type(model).__name__}")
    cfg = model.config
    if not isinstance(train, bool):
        raise TypeError(f"train must be a bool, got {train!r}")
    if train and cfg.dropout > 0 and key is None:
        raise ValueError("training with dropout needs a key: apply(..., train=True, "
                         "key=jax.random.key(step))")
    key = None if not (train and cfg.dropout > 0) else key
    x, mask = _check_input(cfg, x, mask, "x")
    new_state = dict(model.state)
    if cfg.retrieval:
        if x2 is None:
            raise ValueError("a retrieval model takes a pair: apply(model, x, mask, x2, mask2)")
        x2, mask2 = _check_input(cfg, x2, mask2, "x2")
        if x2.shape[0] != x.shape[0]:
            raise ValueError(f"x and x2 must have the same batch size, got {x.shape[0]} and "
                             f"{x2.shape[0]}")
        k1, k2 = (None, None) if key is None else jax.random.split(key)
        e1 = _pool(cfg, _features(model, x, mask, train, k1, new_state), mask)
        # the second sequence's batch statistics update the running averages after the first
        second = SequenceModel.tree_unflatten(cfg, (model.params, dict(new_state)))
        e2 = _pool(cfg, _features(second, x2, mask2, train, k2, new_state), mask2)
        feats = jnp.concatenate([e1, e2, e1 * e2, e1 - e2], axis=-1)           # (B, 4H)
        p = model.params
        hidden = jax.nn.gelu(feats @ p["decoder.0.weight"].T + p["decoder.0.bias"],
                             approximate=False)
        out = hidden @ p["decoder.2.weight"].T + p["decoder.2.bias"]
    else:
        if x2 is not None or mask2 is not None:
            raise ValueError("x2/mask2 are for retrieval models (ModelConfig.retrieval=True)")
        e = _pool(cfg, _features(model, x, mask, train, key, new_state), mask)  # (B, H)
        out = e @ model.params["decoder.weight"].T + model.params["decoder.bias"]
    return out, SequenceModel.tree_unflatten(cfg, (model.params, new_state))
