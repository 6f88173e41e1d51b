"""SGConv beyond one device with JAX's SPMD machinery: context parallelism with ``shard_map``.

Data parallelism needs nothing from here: :func:`sgconv.jax.apply` is a pure function, so a
batch sharded over a mesh (``jax.device_put(u, NamedSharding(mesh, P("data")))``) runs on
every device and gives the unsharded result (tests/test_distributed_jax.py).

Context parallelism splits the *sequence* over a mesh axis: each device holds the time
slice (B, H, L/P) and gets back its slice of the output, the numbers of the layer on the
whole sequence.  Two ``jax.lax.all_to_all`` per layer turn time slices into channel slices
and back (sgconv/_parallel.py)::

    mesh = jax.make_mesh((4,), ("seq",))
    u = jax.device_put(u, NamedSharding(mesh, P(None, None, "seq")))   # (B, H, L)
    y = sgconv.jax.distributed.context_apply(params, u, mesh=mesh, axis_name="seq")
    grads = jax.grad(lambda p: context_apply(p, u, mesh=mesh, axis_name="seq").sum())(params)

- :func:`context_apply`: the layer on a global array, ``shard_map`` inside; any L and H
  (uneven sizes are padded with zeros, which is exact, and cut off again).
- :func:`context_apply_shard`: the per-device function, for use inside your own
  ``shard_map`` (a whole model written per device): its slice (B, H, L_p) in and out.

Both ``jit`` and differentiate; the parameters are replicated, and the gradient of each
comes back summed over the devices (``shard_map`` adds the psum for replicated inputs).
Importing this module imports JAX (``import sgconv`` alone does not).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from .. import _checks, _ops
from .._parallel import communication_volume, context_layer
from ._functional import (_BK, _compute_arrays, _in_layout, _out_layout, as_jax_params,
                          check_options)

__all__ = ["context_apply", "context_apply_shard", "communication_volume"]


def _pad_axis(x, axis: int, extra: int, value=0.0):
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


def _local_arrays(arrays: dict, H: int, parts: int, index) -> dict:
    """This device's block of hp = ceil(H/P) channels of the per-channel arrays.

    H is padded to P*hp with channels that convolve to zero (kernels and D zero; Z and the
    multiplier one, so nothing divides by zero); their outputs are cut off after the second
    all-to-all.  The mixing (pointwise in time) stays whole.
    """
    hp = -(-H // parts)
    extra = hp * parts - H

    def mine(x, axis, fill):
        return jax.lax.dynamic_slice_in_dim(_pad_axis(x, axis, extra, fill), index * hp, hp,
                                            axis)

    local = dict(arrays)
    local["kernels"] = tuple(mine(w, 1, 0.0) for w in arrays["kernels"])   # N x (C', hp, d)
    local["multiplier"] = mine(arrays["multiplier"], 0, 1.0)                # (hp,)
    local["kernel_norm"] = mine(arrays["kernel_norm"], 1, 1.0)              # (C', hp)
    local["D"] = mine(arrays["D"], 1, 0.0)                                  # (C, hp)
    if arrays["decay"] is not None:
        local["decay"] = mine(arrays["decay"], 0, 0.0)                      # (hp,)
    return local


def _shard_layer(params, u, key, *, axis_name, transposed: bool, rate: float, block_size,
                 channel_chunk):
    """The per-device layer (inside shard_map), after the argument checks."""
    config = params.config
    parts = (jax.lax.axis_size(axis_name) if hasattr(jax.lax, "axis_size")
             else jax.lax.psum(1, axis_name))                     # P, static
    index = jax.lax.axis_index(axis_name)
    cdtype = _ops.compute_dtype(_BK.dtype_name(u))
    x = _in_layout(u, transposed, cdtype)                          # (B, H, L_p)
    B, H, L_local = x.shape
    plan = _ops.layer_plan(_BK, config, L_local * parts, block_size)
    arrays = _compute_arrays(params, cdtype)
    k_f = _ops.spectrum(_BK, config, _local_arrays(arrays, H, parts, index), plan)  # (C, hp, F)
    x = _pad_axis(x, 1, k_f.shape[1] * parts - H)                  # (B, P*hp, L_p)
    rng = None if rate == 0.0 else jax.random.fold_in(key, index)  # each device's own mask
    y = context_layer(
        _BK, config, k_f, arrays["out_weight"], arrays["out_bias"], x, plan,
        to_channels=lambda v: jax.lax.all_to_all(v, axis_name, 1, 2, tiled=True),
        to_time=lambda pieces: jax.lax.all_to_all(_BK.concat(list(pieces), axis=2), axis_name,
                                                  3, 2, tiled=True)[:, :, :H],
        dropout=rate, rng=rng, channel_chunk=channel_chunk)       # (B, H, L_p)
    return _out_layout(y, u, transposed)


def _check(params, u, transposed, dropout, key, deterministic, block_size, channel_chunk):
    params = as_jax_params(params)
    transposed, rate, key, block_size, channel_chunk = check_options(
        transposed, dropout, key, deterministic, block_size, channel_chunk)
    u = _checks.check_input(_BK, u, params.config.d_model, transposed)
    return params, u, key, transposed, rate, block_size, channel_chunk


def context_apply_shard(params, u, axis_name, *, transposed: bool = True, dropout: float = 0.0,
                        key=None, deterministic: bool = False, block_size: int | None = None,
                        channel_chunk: int | None = None):
    """This device's part of the SGConv layer, inside ``shard_map`` over ``axis_name``.

    u: this device's time slice (B, H, L_p) (or (B, L_p, H) with ``transposed=False``) of
    a sequence of length L = P*L_p split in device order over the mesh axis; returns its
    slice of the layer's output, the same layout.  params: :class:`sgconv.Params`,
    replicated (in_specs ``PartitionSpec()``).  Every device must call it (it holds two
    ``jax.lax.all_to_all``).  A sequence whose length P does not divide is padded with
    zeros at its end by the caller (exact: no output before the padding reads it, causal
    or bidirectional) and the padded outputs dropped; :func:`context_apply` does that.
    The other arguments are :func:`sgconv.jax.apply`'s; dropout masks are drawn from
    ``fold_in(key, device index)``.
    """
    params, u, key, transposed, rate, block_size, chunk = _check(
        params, u, transposed, dropout, key, deterministic, block_size, channel_chunk)
    return _shard_layer(params, u, key, axis_name=axis_name, transposed=transposed, rate=rate,
                        block_size=block_size, channel_chunk=chunk)


def context_apply(params, u, *, mesh, axis_name: str, batch_axis: str | None = None,
                  transposed: bool = True, dropout: float = 0.0, key=None,
                  deterministic: bool = False, block_size: int | None = None,
                  channel_chunk: int | None = None):
    """The SGConv layer on a global array u whose time axis is split over ``axis_name``.

        u (B, H, L) -> all_to_all -> (B, H/P, L) per device -> FFT convolution of its
        channels over the whole L -> all_to_all -> (B, C, H, L/P) -> GELU, dropout, mixing

    Exactly :func:`sgconv.jax.apply`'s result (within rounding), computed with each
    device holding 1/P of the sequence.  mesh: a ``jax.sharding.Mesh``; axis_name: its
    axis the sequence is split over (P devices); batch_axis: optionally a mesh axis the
    batch is split over (data parallel too).  Any L and H: when P does not divide L, the
    sequence is padded with zeros at its end (exact: no output before the padding reads
    it) and the result cut back to L; when P does not divide H, the last devices convolve
    zero channels.  Per layer each device sends (P-1)/P of B*H*L/P elements in the first
    all-to-all and of C*B*H*L/P in the second (:func:`communication_volume`).  Returns
    u's layout and dtype.  Static: mesh, axis_name, batch_axis and the options.
    """
    params, u, key, transposed, rate, block_size, chunk = _check(
        params, u, transposed, dropout, key, deterministic, block_size, channel_chunk)
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (e.g. jax.make_mesh((4,), "
                        f"('seq',))), got {type(mesh).__name__}")
    for name, what in ((axis_name, "axis_name"), (batch_axis, "batch_axis")):
        if (name is not None or what == "axis_name") and name not in mesh.shape:
            raise ValueError(f"{what}={name!r} is not an axis of the mesh, whose axes are "
                             f"{tuple(mesh.shape)}")
    if batch_axis == axis_name:
        raise ValueError(f"batch_axis and axis_name must be different mesh axes, got "
                         f"{axis_name!r} for both")
    explicit = _explicit(mesh, (axis_name, batch_axis))
    call = functools.partial(_context_jit, params, u, key, mesh, axis_name, batch_axis,
                             transposed, rate, block_size, chunk, explicit)
    if explicit and _no_ambient_mesh():
        if isinstance(u, jax.core.Tracer):
            raise ValueError(f"the mesh's axes {tuple(mesh.axis_names)} are Explicit (JAX's "
                             f"sharding in types), which reshard only under their mesh: call "
                             f"jit inside `with jax.set_mesh(mesh):`, or build the mesh with "
                             f"axis_types=(jax.sharding.AxisType.Auto, ...)")
        with jax.set_mesh(mesh):              # Explicit axes reshard under their mesh only
            return call()
    return call()


def _explicit(mesh, axes) -> bool:
    """Whether any of ``axes`` is an Explicit mesh axis (sharding in types, JAX >= 0.6)."""
    types = getattr(mesh, "axis_types", None)
    if types is None:
        return False
    kinds = dict(zip(mesh.axis_names, types))
    return any(a is not None and "Explicit" in str(kinds[a]) for a in axes)


def _no_ambient_mesh() -> bool:
    get = getattr(jax.sharding, "get_abstract_mesh", None)
    return get is None or not get().axis_names


def _to(x, mesh, spec, explicit: bool):
    """x resharded to ``spec`` on ``mesh`` inside jit (Explicit: reshard; Auto: a constraint)."""
    if explicit:
        return jax.reshard(x, spec)
    return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7, 8, 9, 10))
def _context_jit(params, u, key, mesh, axis_name, batch_axis, transposed, rate, block_size,
                 chunk, explicit):
    parts = mesh.shape[axis_name]
    time_axis = 2 if transposed else 1
    L = u.shape[time_axis]
    # zeros after the end: no output at t < L reads them (causal: the past only;
    # bidirectional: u[t + s] beyond the end is zero on one device too)
    extra = -(-L // parts) * parts - L
    spec = (PartitionSpec(batch_axis, None, axis_name) if transposed
            else PartitionSpec(batch_axis, axis_name, None))
    x = _to(_pad_axis(u, time_axis, extra), mesh, spec, explicit)
    if explicit:
        params, key = _to(params, mesh, PartitionSpec(), True), _to(key, mesh, PartitionSpec(), True)
    layer = _shard_map(
        functools.partial(_shard_layer, axis_name=axis_name, transposed=transposed, rate=rate,
                          block_size=block_size, channel_chunk=chunk),
        mesh=mesh, in_specs=(PartitionSpec(), spec, PartitionSpec()), out_specs=spec)
    y = layer(params, x, key)                                      # time axis sharded
    if extra == 0:
        return y
    if explicit:                  # an uneven length cannot stay sharded: back to u's sharding
        y = jax.reshard(y, jax.typeof(u).sharding.spec)
    return jax.lax.slice_in_dim(y, 0, L, axis=time_axis)


def _shard_map(f, *, mesh, in_specs, out_specs):
    """jax.shard_map (JAX >= 0.6), or jax.experimental.shard_map.shard_map before it."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
    from jax.experimental.shard_map import shard_map
    return shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
