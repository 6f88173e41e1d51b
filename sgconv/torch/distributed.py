"""SGConv beyond one device with ``torch.distributed``: context parallelism for sequences longer
than one device holds.

Data parallelism needs nothing from here: :class:`sgconv.torch.SGConv` is an ordinary module
and trains under ``DistributedDataParallel`` and FSDP2 (``torch.distributed.fsdp.fully_shard``)
as it is (tests/test_distributed_torch.py).

Context parallelism splits the *sequence*: rank p of a process group of P holds the time slice
u[:, :, t_p : t_p + L_p] (B, H, L_p) of one long sequence (t_p = L_0 + ... + L_{p-1}) and gets
back its slice of the layer's output: the numbers of the layer on the whole sequence.  Two
all-to-alls per layer turn time slices into channel slices and back (sgconv/_parallel.py)::

    dist.init_process_group("nccl")                             # or "gloo"; torchrun sets env
    layer = ContextParallelSGConv(64, l_max=2**22)              # same weights on every rank
    y = layer(u_local)                                          # (B, H, L_p) -> (B, H, L_p)
    y.pow(2).mean().backward()                                  # every rank runs backward
    sync_gradients(layer)                                       # sum .grad over the ranks

- :class:`ContextParallelSGConv`: :class:`sgconv.torch.SGConv` (same parameters and
  state_dict keys, so single-device checkpoints load) whose forward takes the rank's slice.
- :func:`all_to_all`: a differentiable all-to-all with uneven sizes (its adjoint is the
  reverse all-to-all), over ``torch.distributed.all_to_all_single``.
- :func:`sync_gradients`: sum (or average) the parameters' gradients over the group.

Importing this module imports PyTorch (``import sgconv`` alone does not).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.distributed as dist

from .. import _checks, _ops
from .._parallel import communication_volume, offsets, split_sizes
from .._parallel import context_layer as _context_layer
from ._module import SGConv
from .functional import _bk, _compute_dtype, _no_autocast

__all__ = ["ContextParallelSGConv", "all_to_all", "sync_gradients", "split_sizes",
           "communication_volume"]


def _group_size_rank(group) -> tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("sgconv.torch.distributed needs an initialised process group: call "
                           "torch.distributed.init_process_group(...) on every rank first (or "
                           "launch with torchrun, which sets its environment)")
    return dist.get_world_size(group), dist.get_rank(group)


# --- the all-to-all ------------------------------------------------------------------------

def _with(shape, dim_a: int, size_a: int, dim_b: int, size_b: int) -> list:
    out = list(shape)
    out[dim_a], out[dim_b] = size_a, size_b
    return out


def _leading_one(shape, dim: int) -> bool:
    """Whether every axis before ``dim`` has length 1 (then pieces along dim are contiguous)."""
    return math.prod(shape[:dim]) == 1


def _exchange(x, split_dim: int, concat_dim: int, split: tuple, concat: tuple, group,
              shape=None):
    """The collective, outside autograd: see :func:`all_to_all`.

    x: a tensor, or an iterator of its pieces along ``concat_dim`` in order (then ``shape``
    gives the whole): each piece is packed into the send buffer as it arrives and can be
    freed before the next is made.
    """
    P, rank = dist.get_world_size(group), dist.get_rank(group)
    pieces = iter([x]) if isinstance(x, torch.Tensor) else iter(x)
    first = next(pieces)
    shape = list(x.shape if isinstance(x, torch.Tensor) else shape)
    send_shapes = [_with(shape, split_dim, split[p], concat_dim, concat[rank]) for p in range(P)]
    recv_shapes = [_with(shape, split_dim, split[rank], concat_dim, concat[q]) for q in range(P)]
    send_sizes = [math.prod(s) for s in send_shapes]
    recv_sizes = [math.prod(s) for s in recv_shapes]
    if isinstance(x, torch.Tensor) and x.is_contiguous() and _leading_one(shape, split_dim):
        send = x.reshape(-1)                                       # pieces already contiguous
    else:
        send = first.new_empty(sum(send_sizes))                    # one region per rank
        regions = [r.view(s) for r, s in zip(send.split(send_sizes), send_shapes)]
        done, piece, first = 0, first, None
        while piece is not None:
            size = piece.shape[concat_dim]
            for region, start, n in zip(regions, offsets(split), split):
                region.narrow(concat_dim, done, size).copy_(piece.narrow(split_dim, start, n))
            done += size
            piece = None                                           # free it before the next
            piece = next(pieces, None)
        del regions
    out_shape = _with(shape, split_dim, split[rank], concat_dim, sum(concat))
    direct = _leading_one(shape, concat_dim)       # then the received pieces are the result
    recv = send.new_empty(out_shape if direct else (sum(recv_sizes),)).reshape(-1)
    dist.all_to_all_single(recv, send, recv_sizes, send_sizes, group=group)
    del send
    if direct:
        return recv.view(out_shape)
    out = recv.new_empty(out_shape)
    for q, (piece, start) in enumerate(zip(recv.split(recv_sizes), offsets(concat))):
        out.narrow(concat_dim, start, concat[q]).copy_(piece.view(recv_shapes[q]))
    return out


def _to_time(pieces, lengths: tuple, hs: tuple, group, needs_grad: bool):
    """The second all-to-all of the layer: channel chunks (B, C, h_i, L) of this rank's h_p
    channels -> (B, C, H, L_p).  Without autograd the chunks are sent as they come (one
    chunk's buffers live at a time); with it they are joined first (the autograd node
    needs them as one input).

    needs_grad must be the same on every rank: each rank's backward then runs this
    all-to-all's reverse, which the others wait for, even on a rank whose chunks carry no
    gradient (one that owns no channel, when the input needs none).
    """
    rank = dist.get_rank(group)
    first = next(pieces)
    if needs_grad:
        rest = list(pieces)
        y = torch.cat([first, *rest], dim=2) if rest else first   # (B, C, h_p, L)
        if not y.requires_grad:
            y = y.detach().requires_grad_(True)                    # keep the node in the graph
        return all_to_all(y, 3, 2, lengths, hs, group)
    shape = (first.shape[0], first.shape[1], hs[rank], first.shape[3])
    stream = itertools.chain([first], pieces)
    del first                                      # the stream drops it once it is sent
    return _exchange(stream, 3, 2, lengths, hs, group, shape=shape)


class _AllToAll(torch.autograd.Function):
    """all_to_all as an autograd node: the backward is the reverse all-to-all (the roles of
    the split and concatenation axes, and of their sizes, swapped)."""

    @staticmethod
    def forward(ctx, x, split_dim, concat_dim, split, concat, group):
        ctx.args = (split_dim, concat_dim, split, concat, group)
        return _exchange(x, split_dim, concat_dim, split, concat, group)

    @staticmethod
    def backward(ctx, grad):
        split_dim, concat_dim, split, concat, group = ctx.args
        g = _exchange(grad.contiguous(), concat_dim, split_dim, concat, split, group)
        return g, None, None, None, None, None


def all_to_all(x, split_dim: int, concat_dim: int, split: tuple | None = None,
               concat: tuple | None = None, group=None):
    """A differentiable all-to-all: x is cut along ``split_dim`` into P pieces, piece p is sent
    to rank p, and the pieces received are joined along ``concat_dim`` in rank order (as
    ``jax.lax.all_to_all(..., tiled=True)``, with uneven sizes allowed).

    split: the P piece lengths along split_dim, the same on every rank (default: as even as
    can be, the first ranks one longer).  concat: each rank's length along concat_dim (the
    same tuple on every rank; default: this rank's length on every rank).  On rank r, x
    has split_dim = sum(split) and concat_dim = concat[r]; the result has split_dim =
    split[r] and concat_dim = sum(concat), the other axes unchanged.  The backward is the
    reverse all-to-all.  Every rank of ``group`` must call it with matching arguments.
    """
    P, rank = _group_size_rank(group)
    split_dim, concat_dim = split_dim % x.ndim, concat_dim % x.ndim
    if split_dim == concat_dim:
        raise ValueError(f"split_dim and concat_dim must be different axes, got {split_dim} twice")
    split = split_sizes(x.shape[split_dim], P) if split is None else tuple(int(s) for s in split)
    concat = (x.shape[concat_dim],) * P if concat is None else tuple(int(s) for s in concat)
    if len(split) != P or len(concat) != P:
        raise ValueError(f"split and concat must give one size per rank (P={P}), got "
                         f"{len(split)} and {len(concat)}")
    if sum(split) != x.shape[split_dim] or concat[rank] != x.shape[concat_dim]:
        raise ValueError(f"rank {rank}: x has shape {tuple(x.shape)}, but split={split} needs "
                         f"{sum(split)} along axis {split_dim} and concat={concat} needs "
                         f"{concat[rank]} along axis {concat_dim}")
    return _AllToAll.apply(x, split_dim, concat_dim, split, concat, group)


# --- gradients of replicated parameters ----------------------------------------------------

def sync_gradients(module: torch.nn.Module, group=None, *, average: bool = False) -> None:
    """Sum (``average=True``: average) every parameter's ``.grad`` over the ranks of ``group``,
    in one all-reduce of the gradients flattened together.

    Under context parallelism each rank's gradient of a replicated parameter is that of its
    own part of the loss: the kernel's gradient holds its channels, the mixing's its time
    slice.  Summed over the ranks they are the gradient of the sum of the ranks' losses, as
    one device would compute it on the whole sequence.  Parameters without a gradient count
    as zero.  Call it on every rank after backward.
    """
    _group_size_rank(group)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)    # gloo has no AVG
    if average:
        flat /= dist.get_world_size(group)
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        if p.grad is None:
            p.grad = g.view_as(p).clone()
        else:
            p.grad.copy_(g.view_as(p))


# --- the layer -----------------------------------------------------------------------------

class ContextParallelSGConv(SGConv):
    """SGConv on a sequence split over the ranks of a process group: rank p's time slice
    (B, H, L_p) in, its slice of the layer's output (B, H, L_p) out, exactly.

        x = all_to_all(u)          (B, H, L_p) -> (B, h_p, L)    this rank's channels
        y = k * x + D x            (B, C, h_p, L)                by FFT over the whole L
        y = all_to_all(y)          (B, C, H, L_p)                back to this rank's time
        out = W dropout(GELU(y)) + b                             pointwise in time

    The slices are contiguous and in rank order; their lengths L_p may differ (they are
    gathered from the ranks on every call, a tiny all-gather, and the batch sizes checked
    to agree).  The H channels are split as evenly as can be (the first H mod P ranks own
    one more; a rank may own none when H < P).  Each rank builds the kernel spectrum for
    its own channels only, over the whole length L (in evaluation it is cached, as
    :class:`SGConv` caches its own).  Causal and bidirectional, any L (also L > l_max).

    Per layer a rank sends (P-1)/P of B*H*L/P elements in the first all-to-all and of
    C*B*H*L/P in the second; the backward sends the same again
    (:func:`communication_volume`).

    The parameters are replicated: at construction they are broadcast from the group's
    first rank (as ``DistributedDataParallel`` does).  Each rank's gradients are those of
    its own part of the loss; :func:`sync_gradients` sums them into the whole sequence's.
    Every rank must run every forward and backward (they are collectives).  Dropout masks
    come from each rank's own generator.  ``return_kernel`` and step-by-step decoding are
    single-device features (use :class:`SGConv`).

    Args: group: the ``torch.distributed`` process group (None: the default group); the
    rest are :class:`SGConv`'s.
    """

    def __init__(self, d_model: int, l_max: int = 1, *, group=None, **kwargs):
        _group_size_rank(group)
        super().__init__(d_model, l_max, **kwargs)
        self.group = group
        self.broadcast_parameters()

    @classmethod
    def from_module(cls, layer: SGConv, group=None) -> "ContextParallelSGConv":
        """The context-parallel form of ``layer``: same options, its weights (from the
        group's first rank, broadcast)."""
        if not isinstance(layer, SGConv):
            raise TypeError(f"from_module expects an sgconv.torch.SGConv, got "
                            f"{type(layer).__name__}")
        cfg = layer.config
        module = cls(cfg.d_model, cfg.l_max, group=group, channels=cfg.channels,
                     bidirectional=cfg.bidirectional, kernel_dim=cfg.kernel_dim,
                     n_scales=cfg.num_scales, decay_min=cfg.decay_min, decay_max=cfg.decay_max,
                     dropout=layer.dropout_rate, transposed=layer.transposed, mode=layer.mode,
                     block_size=layer.block_size, channel_chunk=layer.channel_chunk,
                     lr=layer.kernel_list[0]._optim["lr"], device=layer.D.device,
                     dtype=layer.D.dtype)
        module.load_state_dict(layer.state_dict())
        module.broadcast_parameters()
        module.train(layer.training)
        return module

    def broadcast_parameters(self) -> None:
        """Copy every parameter and floating buffer from the group's first rank to the others."""
        _group_size_rank(self.group)
        src = dist.get_global_rank(self.group, 0) if self.group is not None else 0
        with torch.no_grad():
            for t in [*self.parameters(), *self.buffers()]:
                if t.is_floating_point():
                    dist.broadcast(t.data, src=src, group=self.group)

    def _lengths(self, batch: int, length: int, device) -> tuple[int, ...]:
        """Every rank's L_p (all-gathered), after checking that the batch sizes agree."""
        P, _ = _group_size_rank(self.group)
        mine = torch.tensor([batch, length], dtype=torch.int64, device=device)
        every = torch.empty(2 * P, dtype=torch.int64, device=device)
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        gather(every, mine, group=self.group)                      # (older torch: the old name)
        batches, lengths = every.view(P, 2).T.tolist()
        if len(set(batches)) != 1:
            raise ValueError(f"the ranks hold different batch sizes {batches}: context "
                             f"parallelism splits one batch of sequences along time, so every "
                             f"rank must hold the same B (and its own time slice)")
        return tuple(lengths)

    def forward(self, u: torch.Tensor, return_kernel: bool = False) -> torch.Tensor:
        """This rank's output slice (B, H, L_p) (or (B, L_p, H) when not ``transposed``)."""
        if return_kernel:
            raise ValueError("return_kernel is not available under context parallelism; build "
                             "the kernel with sgconv.torch.SGConv (same parameters)")
        bk = _bk()
        P, rank = _group_size_rank(self.group)
        u = _checks.check_input(bk, u, self.config.d_model, self.transposed)
        x = u if self.transposed else u.transpose(-1, -2)          # (B, H, L_p)
        lengths = self._lengths(x.shape[0], x.shape[-1], x.device)
        L = sum(lengths)
        hs = split_sizes(self.config.d_model, P)
        h0 = offsets(hs)[rank]
        channels = slice(h0, h0 + hs[rank])
        cdtype, device = _compute_dtype(u.dtype), u.device
        arrays = self._arrays(cdtype, device)
        needs_grad = torch.is_grad_enabled() and (
            u.requires_grad or any(p.requires_grad for p in self.parameters()))
        with _no_autocast(device):
            plan = _ops.layer_plan(bk, self.config, L, self.block_size)
            build = lambda: _ops.spectrum(bk, self.config, arrays, plan, channels)  # noqa: E731
            if hs[rank] == 0:
                k_f = None                                         # H < P: no channels here
            else:
                k_f = self._cached((L, cdtype, device, self.block_size, "context", h0,
                                    hs[rank]), build)
                k_f = build() if k_f is None else k_f              # (C, h_p, n//2+1)
            out = _context_layer(
                bk, self.config, k_f, arrays["out_weight"], arrays["out_bias"], x.to(cdtype),
                plan, to_channels=lambda v: all_to_all(v, 1, 2, hs, lengths, self.group),
                to_time=lambda pieces: _to_time(pieces, lengths, hs, self.group, needs_grad),
                dropout=self.dropout_rate if self.training else 0.0,
                channel_chunk=self.channel_chunk)                  # (B, H, L_p)
        out = out.to(u.dtype)
        return out if self.transposed else out.transpose(-1, -2)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", context_parallel=True"
