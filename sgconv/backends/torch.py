"""PyTorch backend: torch tensors on the CPU or a CUDA device, with autograd.

The generic math in :mod:`sgconv._ops` runs unchanged on tensors; this file supplies
conversion, the FFTs, the device of the result, and the fast paths that measurements on
the project's CPU showed worth having (numbers at each):

* The FFTs as ``torch.library`` custom ops with registered autograd formulas and fake
  (meta) implementations: ``sgconv::rfft`` (the kernel's spectrum) and ``sgconv::fft_conv``
  (transform, product, inverse and crop), each with a backward op.  The backward keeps the
  input's spectrum and the kernel's, not the length-n intermediates autograd would hold,
  and computes the adjoints (correlations) with real transforms.  As custom ops they are
  opaque to ``torch.compile``: no complex tensor ever enters an Inductor graph.  That is
  also what keeps compiled training alive on PyTorch <= 2.13: there, Inductor's CPU code
  for the gradient of ``rfft`` (a strided read of ``view_as_real``) fused with the
  gradient of ``F.interpolate`` (an index_put) emits a 2D-tiled ``atomic_add`` whose index
  adds the inner tile offset twice, writing out of bounds (heap corruption, "double free
  or corruption"; pytorch/pytorch#191837, fixed by #191861).  tests/test_torch_compile.py
  keeps the six-line reproducer.
* ``upsample``: SPEC's stretch of the sub-kernels is ``F.interpolate``'s, one fused pass.
* ``linear_channels``: the channel mixing as one ``baddbmm`` (bias folded into the GEMM),
  accumulated in place over channel chunks.
* ``gelu``: torch's exact (erf) GELU kernel; ``take``: ``gather``.

``torch`` is imported by :meth:`TorchBackend.load`, never by ``import sgconv``.
"""

from __future__ import annotations

import threading

import numpy as np

from ._base import Backend, BackendUnavailableError, next_smooth

__all__ = ["TorchBackend"]

_OPS_LOCK = threading.Lock()
_OPS: dict = {}


class TorchBackend(Backend):
    """SGConv on torch tensors (CPU or CUDA), differentiable with autograd."""

    name = "torch"
    extra = "torch"
    differentiable = True
    fft_multiple = 2          # cuFFT: an even real transform is a half-length complex one

    def __init__(self):
        self.torch = None
        self._ops = None
        self._ops_2d = None

    # --- availability --------------------------------------------------------------

    def load(self) -> None:
        if self.torch is not None:
            return
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError(
                f"the 'torch' backend needs PyTorch, which could not be imported ({exc}); "
                f"install it with: pip install 'sgconv[torch]'") from exc
        self._ops = _custom_ops(torch)
        from ._torch_ops2d import custom_ops_2d
        self._ops_2d = custom_ops_2d(torch)      # registered here: no lock taken in compiled code
        self.xp = torch
        self.torch = torch

    def version(self) -> str:
        self.load()
        return f"torch {self.torch.__version__}"

    def device_description(self) -> str:
        self.load()
        torch = self.torch
        text = f"cpu ({torch.get_num_threads()} threads)"
        if torch.cuda.is_available():
            text += f"; cuda:{torch.cuda.current_device()} " \
                    f"({torch.cuda.get_device_name()}) for CUDA tensors"
        return text

    # --- arrays --------------------------------------------------------------------

    def is_native(self, x) -> bool:
        return self.torch is not None and isinstance(x, self.torch.Tensor)

    def asarray(self, x, dtype: str | None = None, like=None):
        torch = self.torch
        if isinstance(x, np.ndarray) and torch.compiler.is_compiling():
            # Under torch.compile the generic code's NumPy constants (interpolation
            # weights) are traced arrays: torch.as_tensor converts them, while the base
            # class's checks (dtype, flags) would break the graph.
            out = torch.as_tensor(x, device=None if like is None else like.device)
            return out if dtype is None else self.cast(out, dtype)
        return super().asarray(x, dtype, like)

    def _convert(self, x, dtype):
        arr = np.asarray(x, dtype=dtype)
        if not (arr.flags.writeable and arr.flags.c_contiguous):
            arr = np.ascontiguousarray(arr).copy()   # torch.from_numpy wants writable memory
        return self.torch.from_numpy(arr)            # keeps NumPy's dtype

    def to_device_of(self, x, like):
        return x if x.device == like.device else x.to(like.device)

    def to_numpy(self, x) -> np.ndarray:
        if not self.is_native(x):
            return np.asarray(x)
        x = x.detach()
        if x.dtype == self.torch.bfloat16:
            x = x.float()                            # NumPy has no bfloat16
        return x.cpu().numpy()

    def dtype_name(self, x) -> str:
        return str(x.dtype).removeprefix("torch.")

    def cast(self, x, dtype: str):
        return x.to(getattr(self.torch, dtype))

    def cast_hint(self, name: str) -> str:
        return f"{name}.float()"

    def zeros(self, shape, dtype: str, like=None):
        device = None if like is None else like.device
        return self.torch.zeros(tuple(shape), dtype=getattr(self.torch, dtype), device=device)

    def empty(self, shape, dtype: str, like=None):
        device = None if like is None else like.device
        return self.torch.empty(tuple(shape), dtype=getattr(self.torch, dtype), device=device)

    # --- the operations the generic math needs -----------------------------------------

    def next_fast_len(self, n: int) -> int:
        if self.torch.compiler.is_compiling():
            # dynamo traces through the search (plain int arithmetic), skipping the cache
            return next_smooth.__wrapped__(int(n), self.fft_primes, self.fft_multiple)
        return super().next_fast_len(n)

    def rfft(self, x, n: int):
        """Real FFT of the last axis, zero-padded to n (the ``sgconv::rfft`` custom op)."""
        return self._ops["rfft"](x, n)

    def irfft(self, x, n: int):
        return self.torch.fft.irfft(x, n=n)

    def fft_conv(self, u, k_f, n: int, keep: int):
        """irfft(rfft(u, n)[:, None] * k_f, n)[..., :keep], (B, H, ..., P) -> (B, C, H, ..., keep),
        as the ``sgconv::fft_conv`` custom op.  conj(rfft(u)) is kept for the backward only
        when the kernel's spectrum needs a gradient."""
        torch = self.torch
        save = bool(torch.is_grad_enabled() and k_f.requires_grad)
        return self._ops["fft_conv"](u, k_f, n, keep, save)[0]

    # --- two-dimensional SGConv: custom ops of sgconv/backends/_torch_ops2d.py ------------

    def fft(self, x, n: int):
        return self.torch.fft.fft(x, n=n)

    def rfft2(self, x, nx: int, ny: int):
        return self.torch.fft.rfft2(x, s=(nx, ny))

    def irfft2(self, x, nx: int, ny: int):
        return self.torch.fft.irfft2(x, s=(nx, ny))

    def spectrum2d(self, kx, ky, D, nx: int, ny: int, ax: int, ay: int):
        """FFT(lay(kx)) (x) RFFT(lay(ky)) + D as the ``sgconv::spectrum2d`` custom op (the
        layout, the FFTs and the product inside it; with a backward op)."""
        return self._ops2d()["spectrum2d"](kx, ky, D, nx, ny, ax, ay)

    def fft_conv2d(self, u, k_f, nx: int, ny: int):
        """irfft2(rfft2(u) * k_f)[..., :X, :Y] as the ``sgconv::fft_conv2d`` custom op;
        conj(rfft2(u)) is kept for the backward only when k_f needs a gradient."""
        save = bool(self.torch.is_grad_enabled() and k_f.requires_grad)
        return self._ops2d()["fft_conv2d"](u, k_f, nx, ny, save)[0]

    def _ops2d(self) -> dict:
        if self._ops_2d is None:
            from ._torch_ops2d import custom_ops_2d
            self._ops_2d = custom_ops_2d(self.torch)
        return self._ops_2d

    def take(self, x, index):
        # gather (scatter_add backward) measured 1.5x faster than index_select forward and
        # backward for the largest upsampling (a (1, 256, 64) sub-kernel to 8192 taps)
        idx = self.torch.as_tensor(index, dtype=self.torch.long, device=x.device)
        return self.torch.gather(x, -1, idx.expand(*x.shape[:-1], idx.shape[0]))

    def pad_last(self, x, before: int, after: int):
        return self.torch.nn.functional.pad(x, (before, after))

    def take_rows(self, x, index):
        """index_select: 18 us against 166 us for x[index] (714 rows of a (65537, 1, 256)
        float32 history, 1 thread)."""
        return self.torch.index_select(x, 0, index)

    def contract_rows(self, coef, x):
        """A broadcast product summed over p: torch.einsum lowers this contraction to a bmm
        over h with a strided copy per batch, 2.5 ms against 0.11 ms here (P=713, B=1,
        C=1, H=256, float64, 1 thread)."""
        return (coef[:, None] * x[:, :, None]).sum(0)

    def update_runs(self, sums, rows, lengths):
        """In place (``add_``/``sub_``), as NumPy's: the decoding state is updated, not
        rebuilt, every step; float32 inputs are added to float64 sums exactly."""
        S, M = sums[0], sums[1]
        M.add_(S)                                                   # uses S before the step
        S.add_(rows[:-1]).sub_(rows[1:])
        M.sub_(rows[1:].mul_(lengths))                              # l * leave, exact
        return sums

    def flip_last(self, x):
        return x.flip(-1)                          # torch has no negative strides

    def erf(self, x):
        return self.torch.erf(x)

    def stop_gradient(self, x):
        return x.detach()

    # --- randomness ----------------------------------------------------------------

    def dropout_rng(self, rng, like=None):
        """None (torch's global generator: the fused dropout kernel), a ``torch.Generator``,
        or an int seed for a fresh generator on ``like``'s device."""
        torch = self.torch
        if rng is None or isinstance(rng, torch.Generator):
            return rng
        if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
            device = None if like is None else like.device
            return torch.Generator(device=device).manual_seed(int(rng))
        raise TypeError(f"the torch backend's dropout takes rng=None, an int seed or a "
                        f"torch.Generator, got {type(rng).__name__}")

    def dropout(self, x, rate: float, rng):
        """Inverted dropout: keep with probability 1 - rate, scale kept elements by 1/(1-rate)."""
        torch = self.torch
        rng = self.dropout_rng(rng, like=x)
        if rng is None:
            return torch.nn.functional.dropout(x, rate, training=True)
        keep = torch.rand(x.shape, generator=rng, device=x.device, dtype=x.dtype) >= rate
        return x * keep / (1.0 - rate)

    def synchronize(self) -> None:
        torch = self.torch
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    # --- fast paths ----------------------------------------------------------------

    def gelu(self, x):
        """Exact (erf) GELU, torch's fused kernel."""
        return self.torch.nn.functional.gelu(x)

    def upsample(self, w, factor: int, interpolation: str):
        """SPEC's upsampling is F.interpolate's (half-pixel centres, align_corners=False; or
        nearest, floor(j / s)): one fused pass forward and backward.  Measured fwd+bwd of
        all scales, H=256, d=64, N=9: 0.16 s vs 0.52 s for the generic gathers and blend."""
        mode = "nearest" if interpolation == "nearest" else "linear"
        extra = {} if mode == "nearest" else {"align_corners": False}
        return self.torch.nn.functional.interpolate(w, scale_factor=factor, mode=mode, **extra)

    def linear_channels(self, y, weight, bias, out=None):
        """out (B, H, L) = weight (H, C*H) @ y (B, C*H, L) + bias, as one batched GEMM;
        with ``out``, the product is added into it in place (``baddbmm_`` saves its
        factors, not ``out``, so no second (B, H, L) buffer exists).

        Measured (B=8, H=256, L=16384 float32, 2 threads): baddbmm 0.10 s, ``weight @ y +
        bias[:, None]`` 0.62 s (the broadcast matmul and the separate bias pass).
        """
        B = y.shape[0]
        factor = weight.expand(B, *weight.shape)
        if out is not None:
            return out.baddbmm_(factor, y)
        return self.torch.baddbmm(bias[None, :, None], factor, y)


def _custom_ops(torch) -> dict:
    """Register the ``sgconv::`` custom ops once per process; returns them by name.

    Forward: Y = rfft(x, n); y = irfft(rfft(u, n) * K, n)[..., :keep].
    Backward, with G the incoming gradient (PyTorch's convention for a complex z is
    dL/dRe z + i dL/dIm z):

    * rfft: dL/dx[t] = Re sum_f G_f e^{+2 pi i f t / n} = n irfft(G w', n)[t], with w' = 1/2 on
      the interior bins (irfft counts those twice) and 1 at f = 0 and f = n/2.
    * fft_conv, with Gy = rfft(g, n) (zero-padding g to n is the adjoint of the crop):
      grad_u = irfft(sum_c Gy conj(K), n)[..., :P]   (correlation: the adjoint of convolution)
      grad_K = w sum_b Gy conj(U)                     (summed over u's block axes too)
      where w_f = 2/n inside and 1/n at f = 0 and f = n/2: the weights with which irfft
      reads each bin.  This is what autograd itself gives for irfft(U * K).
    """
    with _OPS_LOCK:
        if _OPS:
            return _OPS
        def complex_of(dtype):
            return torch.complex128 if dtype == torch.float64 else torch.complex64

        @torch.library.custom_op("sgconv::rfft", mutates_args=(),
                                 schema="(Tensor x, int n) -> Tensor")
        def rfft(x, n):
            return torch.fft.rfft(x, n=n)

        @rfft.register_fake
        def _(x, n):
            return x.new_empty((*x.shape[:-1], n // 2 + 1), dtype=complex_of(x.dtype))

        @torch.library.custom_op("sgconv::rfft_backward", mutates_args=(),
                                 schema="(Tensor grad, int n, int m) -> Tensor")
        def rfft_backward(grad, n, m):
            w = torch.ones(grad.shape[-1], dtype=grad.real.dtype, device=grad.device)
            w[1:(n + 1) // 2] = 0.5                                # interior bins
            return torch.fft.irfft(grad * w, n=n)[..., :m] * n    # (..., m)

        @rfft_backward.register_fake
        def _(grad, n, m):
            return grad.new_empty((*grad.shape[:-1], m), dtype=grad.real.dtype)

        def rfft_setup(ctx, inputs, output):
            ctx.n, ctx.m = inputs[1], inputs[0].shape[-1]

        def rfft_grad(ctx, grad):
            return rfft_backward(grad, ctx.n, ctx.m), None

        rfft.register_autograd(rfft_grad, setup_context=rfft_setup)

        def spectrum_view(k_f, ndim: int):
            """k_f (C, H, F) broadcast over the block axes of a rank-``ndim`` u."""
            return k_f.reshape(*k_f.shape[:2], *([1] * (ndim - 3)), k_f.shape[-1])

        @torch.library.custom_op(
            "sgconv::fft_conv", mutates_args=(),
            schema="(Tensor u, Tensor k_f, int n, int keep, bool save_spectrum) -> (Tensor, Tensor)")
        def fft_conv(u, k_f, n, keep, save_spectrum):
            if u.shape[0] == 0:                                    # MKL refuses empty FFTs
                empty = u.new_zeros((0, k_f.shape[0], *u.shape[1:-1], n))[..., :keep]
                return empty, u.new_zeros((0, *u.shape[1:-1], n // 2 + 1), dtype=k_f.dtype)
            k = spectrum_view(k_f, u.ndim)                         # (C, H, ..., F)
            u_f = torch.fft.rfft(u, n=n)[:, None]                  # (B, 1, H, ..., F)
            if save_spectrum:
                prod = u_f * k
                # grad_K needs conj(U): conjugate the buffer in place once now, rather than
                # have every product in backward materialise a conjugated copy (measured:
                # the copies took 0.35 s of a 3.4 s step at B=8, H=256, L=16384).
                saved = u_f[:, 0].conj_physical_()
            else:
                same = torch.broadcast_shapes(u_f.shape, k.shape) == u_f.shape
                prod = u_f.mul_(k) if same and u_f.dtype == k.dtype else u_f * k
                saved = u_f.new_empty((0,))
            # The output is a view of the first ``keep`` samples of irfft's buffer: a
            # contiguous copy would cost a pass and an allocation (the GELU after it keeps
            # the buffer for its backward; compare_torch.py's peak memory includes that).
            return torch.fft.irfft(prod, n=n)[..., :keep], saved

        @fft_conv.register_fake
        def _(u, k_f, n, keep, save_spectrum):
            B, H, rest = u.shape[0], u.shape[1], tuple(u.shape[2:-1])
            full = u.new_empty((B, k_f.shape[0], H, *rest, n))
            F = n // 2 + 1
            saved = u.new_empty((B, H, *rest, F) if save_spectrum else (0,),
                                dtype=complex_of(u.dtype))
            return full[..., :keep], saved

        @torch.library.custom_op(
            "sgconv::fft_conv_backward", mutates_args=(),
            schema="(Tensor g, Tensor u_conj, Tensor k_f, int n, int length, bool need_u, "
                   "bool need_k) -> (Tensor, Tensor)")
        def fft_conv_backward(g, u_conj, k_f, n, length, need_u, need_k):
            if g.shape[0] == 0:                                    # empty batch: no gradient
                grad_u = g.new_zeros((0, *g.shape[2:-1], n))[..., :length] if need_u \
                    else g.new_empty((0,))
                grad_k = torch.zeros_like(k_f) if need_k else g.new_empty((0,))
                return grad_u, grad_k
            g_f = torch.fft.rfft(g, n=n)                           # (B, C, H, ..., F)
            grad_u = grad_k = g.new_empty((0,))
            if need_k:
                # sum over b one slice at a time, into one buffer: no (B, C, H, ..., F)
                # temporary (einsum permutes g_f into a copy; measured slower)
                acc = g_f[0] * u_conj[0]                           # (C, H, ..., F)
                for b in range(1, g_f.shape[0]):
                    acc.addcmul_(g_f[b], u_conj[b])
                acc = acc.reshape(*acc.shape[:2], -1, acc.shape[-1]).sum(2)  # block axes
                acc.mul_(2.0 / n)
                acc[..., 0] *= 0.5                                 # DC is read once
                if n % 2 == 0:
                    acc[..., -1] *= 0.5                            # so is Nyquist
                grad_k = acc                                       # (C, H, F)
            if need_u:
                k = spectrum_view(k_f, g.ndim - 1)
                if g_f.shape[1] == 1:
                    prod = g_f.mul_(k.conj())[:, 0]                # C = 1: in place
                else:
                    prod = (g_f * k.conj()).sum(1)                 # (B, H, ..., F)
                grad_u = torch.fft.irfft(prod, n=n)[..., :length]  # (B, H, ..., P)
            return grad_u, grad_k

        @fft_conv_backward.register_fake
        def _(g, u_conj, k_f, n, length, need_u, need_k):
            B, H, rest = g.shape[0], g.shape[2], tuple(g.shape[3:-1])
            grad_u = g.new_empty((B, H, *rest, n))[..., :length] if need_u else g.new_empty((0,))
            grad_k = k_f.new_empty(k_f.shape) if need_k else g.new_empty((0,))
            return grad_u, grad_k

        def fft_conv_setup(ctx, inputs, output):
            u, k_f, n, keep, save_spectrum = inputs
            ctx.save_for_backward(output[1], k_f)
            ctx.n, ctx.length = n, u.shape[-1]
            ctx.mark_non_differentiable(output[1])

        def fft_conv_grad(ctx, grad_y, grad_saved):
            u_conj, k_f = ctx.saved_tensors
            need_u, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            grad_u, grad_k = fft_conv_backward(grad_y, u_conj, k_f, ctx.n, ctx.length,
                                               need_u, need_k)
            return (grad_u if need_u else None, grad_k if need_k else None, None, None, None)

        fft_conv.register_autograd(fft_conv_grad, setup_context=fft_conv_setup)
        _OPS.update(rfft=rfft, fft_conv=fft_conv)
        return _OPS
