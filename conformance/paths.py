"""Code paths that engage only above some size, reached at the suite's small sizes.

The layer convolves the H channels a few at a time when they would not fit the memory
budget (sgconv.get_memory_budget(), 64 MiB by default), and the FFT planner switches to
overlap-add when the kernel is much shorter than the sequence.  At the suite's sizes
(H <= 3, L <= 96) neither happens by itself, so both thresholds are parameters the
properties here set small:

* ``channel_chunk=h`` (every front end takes it) forces chunks of h channels;
* ``sgconv.memory_budget(nbytes)`` makes the automatic choice chunk: nbytes below one
  channel's FFT buffer gives chunks of one channel (the check asserts that the automatic
  path really chunked);
* ``block_size=P`` forces overlap-add with many blocks (P down to the kernel's spill).

Each path is held to the float64 reference with the tolerance rule, through
``sgconv.apply``, ``sgconv.prepare`` (the chunks then slice a prepared spectrum), the
torch module (training mode, and evaluation with its cached spectrum) and ``sgconv.jax``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import reference
import sgconv
from sgconv import _ops

from . import oracle, tolerance
from .examples import Example
from .properties import NotApplicable, _close, _np, _random, _rng, make_params, session

__all__ = ["FRONTS", "PathExample", "check_chunked_layer", "check_auto_chunks",
           "PATH_PROPERTIES"]


#: The front ends that run a layer, per framework (the first two on every backend).
FRONTS = {"numpy": ("apply", "prepare"), "cupy": ("apply", "prepare"),
          "torch": ("apply", "prepare", "torch-train", "torch-eval"),
          "jax": ("apply", "prepare", "jax")}


@dataclasses.dataclass(frozen=True)
class PathExample:
    """An Example plus the size parameters of the path: chunk h (1 <= h <= H) and the
    front end that runs it: a name ('apply', 'prepare', 'torch-train', 'torch-eval',
    'jax') or an int i, the i-th (mod their number) of the backend's FRONTS."""

    ex: Example
    chunk: int = 1
    front: str | int = "apply"

    def resolve(self, backend: str) -> "PathExample":
        if isinstance(self.front, str):
            return self
        fronts = FRONTS.get(sgconv.backend(backend).name, ("apply", "prepare"))
        return dataclasses.replace(self, front=fronts[self.front % len(fronts)])

    def describe(self, backend: str, check: str) -> str:
        return (f"channel_chunk={self.chunk} front end={self.front}\n  "
                f"{self.ex.describe(backend, check)}\n  (PathExample(ex, chunk={self.chunk}, "
                f"front={self.front!r}))")


def _expected(ex: Example, state, u):
    x = u if ex.transposed else u.swapaxes(1, 2)
    want = reference.layer(state, x, ex.bidirectional, ex.transposed, ex.interpolation)
    bound = tolerance.layer_bound(state, ex.config, u, ex.dtype, blocks=ex.block_size != 0)
    return x, want, bound if ex.transposed else bound.swapaxes(1, 2)


def _run_front(bk, name: str, pex: PathExample, params, x, channel_chunk):
    """The layer on x through the chosen front end; the result as float64."""
    ex = pex.ex
    if pex.front == "apply":
        return _np(bk, sgconv.apply(params, bk.asarray(x), transposed=ex.transposed,
                                    block_size=ex.block_size, channel_chunk=channel_chunk))
    if pex.front == "prepare":
        fast = sgconv.prepare(params, ex.length, block_size=ex.block_size)
        return _np(bk, sgconv.apply(fast, bk.asarray(x), transposed=ex.transposed,
                                    channel_chunk=channel_chunk))
    if pex.front.startswith("torch"):
        import torch
        from sgconv.torch import SGConv
        module = SGConv.from_params(params, transposed=ex.transposed, block_size=ex.block_size,
                                    channel_chunk=channel_chunk,
                                    dtype=getattr(torch, ex.dtype))
        if pex.front == "torch-eval":
            module.eval()
            with torch.no_grad():
                module(torch.as_tensor(x))                         # fills the cache
                return _np(bk, module(torch.as_tensor(x)))         # the cached spectrum, chunked
        return _np(bk, module(torch.as_tensor(x)))
    if pex.front == "jax":
        import sgconv.jax as sgj
        return _np(bk, sgj.apply(params, bk.asarray(x), transposed=ex.transposed,
                                 block_size=ex.block_size, channel_chunk=channel_chunk))
    raise ValueError(pex.front)


def _framework_front(name: str, pex: PathExample) -> PathExample:
    pex = pex.resolve(name)
    fw = sgconv.backend(name).name
    if pex.front.startswith("torch") and fw != "torch":
        raise NotApplicable("the torch module runs on the torch backend only")
    if pex.front == "jax" and fw != "jax":
        raise NotApplicable("sgconv.jax runs on the jax backend only")
    return pex


def check_chunked_layer(name: str, pex: PathExample) -> None:
    """The layer convolved ``chunk`` channels at a time equals reference.layer (every front
    end; with the planner's, one FFT's or many overlap-add blocks' plan)."""
    pex = _framework_front(name, pex)
    ex = pex.ex
    if pex.chunk >= ex.d_model:
        raise NotApplicable("a chunk of all H channels is the unchunked path")
    u = _random(_rng(ex, 21), (ex.batch, ex.d_model, ex.length), ex.dtype)
    with session(name, ex.dtype) as bk:
        params = make_params(bk, name, ex)
        state = oracle.params_state(params, bk)
        x, want, bound = _expected(ex, state, np.ascontiguousarray(u))
        got = _run_front(bk, name, pex, params, np.ascontiguousarray(x), pex.chunk)
    _close("check_chunked_layer", name, ex, got, want, bound,
           f"layer in chunks of {pex.chunk} of H={ex.d_model} channels ({pex.front}) == "
           f"reference.layer\n  {pex.describe(name, 'check_chunked_layer')}")


def check_auto_chunks(name: str, pex: PathExample) -> None:
    """With a memory budget below one channel's FFT buffer, the automatic choice chunks
    (one channel at a time), and the result equals reference.layer."""
    pex = _framework_front(name, pex)
    ex = pex.ex
    if ex.d_model < 2:
        raise NotApplicable("one channel cannot be chunked")
    u = _random(_rng(ex, 22), (ex.batch, ex.d_model, ex.length), ex.dtype)
    with session(name, ex.dtype) as bk:
        params = make_params(bk, name, ex)
        state = oracle.params_state(params, bk)
        plan = _ops.layer_plan(bk, ex.config, ex.length, ex.block_size)
        x, want, bound = _expected(ex, state, np.ascontiguousarray(u))
        with sgconv.memory_budget(1):
            chosen = _ops.choose_channel_chunk(ex.config, ex.batch, plan, 4)
            assert chosen == 1, f"a 1-byte budget must chunk one channel at a time, got {chosen}"
            got = _run_front(bk, name, pex, params, np.ascontiguousarray(x), None)
        assert sgconv.get_memory_budget() == 64 << 20, "memory_budget() did not restore"
        with sgconv.memory_budget(1 << 40):
            assert _ops.choose_channel_chunk(ex.config, ex.batch, plan, 4) is None
    _close("check_auto_chunks", name, ex, got, want, bound,
           f"layer with the automatic chunk under a 1-byte budget ({pex.front}) == "
           f"reference.layer\n  {pex.describe(name, 'check_auto_chunks')}")


PATH_PROPERTIES = {"chunked_layer": check_chunked_layer, "auto_chunks": check_auto_chunks}
