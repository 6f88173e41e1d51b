"""PyTorch backend: torch tensors on the CPU or a CUDA device, with autograd.

The generic math in :mod:`sgconv._ops` runs unchanged on tensors; this file supplies
conversion, ``torch.fft``, the device of the result, and the fast paths that measurements
on the project's CPU showed worth having (numbers at each):

* ``fft_conv``: the FFT convolution as one :class:`torch.autograd.Function` whose backward
  pass keeps the input's spectrum and the kernel's, not the length-n intermediates that
  autograd would hold, and computes the adjoint (a correlation) with real transforms;
  without autograd the spectral product is taken in place.
* ``upsample``: SPEC's stretch of the sub-kernels is ``F.interpolate``'s, one fused pass.
* ``linear_channels``: the channel mixing as one ``baddbmm`` (bias folded into the GEMM).
* ``gelu``: torch's exact (erf) GELU kernel; ``take``: ``gather``.

``torch`` is imported by :meth:`TorchBackend.load`, never by ``import sgconv``.
"""

from __future__ import annotations

import functools

import numpy as np

from ._base import Backend, BackendUnavailableError

__all__ = ["TorchBackend", "fast_len"]

@functools.lru_cache(maxsize=1024)
def fast_len(n: int) -> int:
    """The smallest even 2,3,5,7-smooth integer >= n (n itself for n <= 2).

    MKL (the CPU FFT of the PyTorch wheels), pocketfft and cuFFT all have kernels for
    radices 2, 3, 5 and 7.  Measured on the project's 2-core CPU (rfft + irfft of 2**21
    floats, 24 random target lengths 600 to 70000, median of 7): these lengths took 0.65x
    the time of the next power of two in total, and 5-smooth lengths were no faster.
    """
    if n <= 2:
        return max(int(n), 1)
    best = None
    p2 = 2
    while p2 < 2 * n:                       # every even 2,3,5,7-smooth number in [n, 2^k]
        p3 = p2
        while p3 < 2 * n:
            p5 = p3
            while p5 < 2 * n:
                p7 = p5
                while p7 < n:
                    p7 *= 7
                if best is None or p7 < best:
                    best = p7
                p5 *= 5
            p3 *= 3
        p2 *= 2
    return best


class TorchBackend(Backend):
    """SGConv on torch tensors (CPU or CUDA), differentiable with autograd."""

    name = "torch"
    extra = "torch"
    differentiable = True

    def __init__(self):
        self.torch = None
        self._fft_conv_fn = None

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
        self.torch = torch
        self._fft_conv_fn = _make_fft_conv(torch)

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

    def zeros(self, shape, dtype: str, like=None):
        device = None if like is None else like.device
        return self.torch.zeros(tuple(shape), dtype=getattr(self.torch, dtype), device=device)

    # --- the operations the generic math needs -----------------------------------------

    def next_fast_len(self, n: int) -> int:
        if self.torch.compiler.is_compiling():
            return fast_len.__wrapped__(n)     # dynamo traces through, skipping the cache
        return fast_len(n)

    def rfft(self, x, n: int):
        return self.torch.fft.rfft(x, n=n)

    def irfft(self, x, n: int):
        return self.torch.fft.irfft(x, n=n)

    def take(self, x, index):
        # gather (scatter_add backward) measured 1.5x faster than index_select forward and
        # backward for the largest upsampling (a (1, 256, 64) sub-kernel to 8192 taps)
        idx = self.torch.as_tensor(index, dtype=self.torch.long, device=x.device)
        return self.torch.gather(x, -1, idx.expand(*x.shape[:-1], idx.shape[0]))

    def concat(self, arrays, axis: int = -1):
        return self.torch.cat(list(arrays), dim=axis)

    def pad_last(self, x, before: int, after: int):
        return self.torch.nn.functional.pad(x, (before, after))

    def flip_last(self, x):
        return x.flip(-1)

    def sqrt(self, x):
        return self.torch.sqrt(x)

    def erf(self, x):
        return self.torch.erf(x)

    def exp(self, x):
        return self.torch.exp(x)

    def log(self, x):
        return self.torch.log(x)

    def stop_gradient(self, x):
        return x.detach()

    def dropout(self, x, rate: float, rng):
        """Inverted dropout.  rng: None (torch's global generator, the fused kernel),
        a ``torch.Generator``, or an int seed for a fresh generator on x's device."""
        torch = self.torch
        if rng is None:
            return torch.nn.functional.dropout(x, rate, training=True)
        if isinstance(rng, torch.Generator):
            generator = rng
        elif isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
            generator = torch.Generator(device=x.device).manual_seed(int(rng))
        else:
            raise TypeError(f"the torch backend's dropout takes rng=None, an int seed or a "
                            f"torch.Generator, got {type(rng).__name__}")
        keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) >= rate
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

    def linear_channels(self, y, weight, bias):
        """out (B, H, L) = weight (H, C*H) @ y (B, C*H, L) + bias, as one batched GEMM.

        Measured (B=8, H=256, L=16384 float32, 2 threads): baddbmm 0.10 s, ``weight @ y +
        bias[:, None]`` 0.62 s (the broadcast matmul and the separate bias pass).
        """
        B = y.shape[0]
        return self.torch.baddbmm(bias[None, :, None], weight.expand(B, *weight.shape), y)

    def spectral_product(self, u_f, k_f):
        """u_f * k_f, written into u_f when the result has u_f's shape (C = 1) and
        autograd does not need u_f: saves a B*H*F complex buffer."""
        if (not (u_f.requires_grad or k_f.requires_grad) or not self.torch.is_grad_enabled()) \
                and u_f.shape == self.torch.broadcast_shapes(u_f.shape, k_f.shape) \
                and u_f.dtype == k_f.dtype:
            return u_f.mul_(k_f)
        return u_f * k_f

    def fft_conv(self, u, k_f, n: int, keep: int):
        """irfft(rfft(u, n)[:, None] * k_f, n)[..., :keep], (B, H, ..., P) -> (B, C, H, ..., keep).

        With autograd on, a custom Function (see :func:`_make_fft_conv`); without, the
        plain transforms with the product taken in place.
        """
        torch = self.torch
        if torch.is_grad_enabled() and (u.requires_grad or k_f.requires_grad):
            return self._fft_conv_fn(u, k_f, n, keep)
        u_f = torch.fft.rfft(u, n=n)[:, None]                        # (B, 1, H, ..., F)
        return torch.fft.irfft(self.spectral_product(u_f, k_f), n=n)[..., :keep]


def _make_fft_conv(torch):
    """The FFT convolution as a torch.autograd.Function (built once torch is imported).

    Forward: y = irfft(U * K, n)[..., :keep] with U = rfft(u, n), K = k_f.
    Saved: conj(U) (B, H, ..., F), only when K needs a gradient, and K; autograd alone
    would also hold the product.  The output is a view of the first ``keep`` samples of
    the irfft's buffer: a contiguous copy would cost a pass and a fresh allocation (the
    GELU after it keeps the buffer for its backward; the peak-memory comparison in
    asv_benchmarks/compare_torch.py includes that).

    Backward, with G = rfft(g, n) (zero-padding g to n is the adjoint of the crop):
      grad_u = irfft(sum_c G * conj(K), n)[..., :P]     (correlation: adjoint of convolution)
      grad_K = w * sum_b G * conj(U)                    (summed over broadcast axes)
    where w_f = 2/n for 0 < f < n/2 and 1/n at f = 0 and f = n/2: the weights with which
    irfft reads each bin (the bins strictly inside appear twice in the full spectrum).
    With PyTorch's convention for complex gradients (dL/dRe + i dL/dIm), this grad_K is
    what autograd itself gives for irfft(U * K); the rfft that made K then turns it into
    the gradient of the time-domain kernel.
    """

    class FFTConv(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u, k_f, n, keep):
            u_f = torch.fft.rfft(u, n=n)                              # (B, H, ..., F)
            y = torch.fft.irfft(u_f[:, None] * k_f, n=n)[..., :keep]  # (B, C, H, ..., keep)
            # grad_K needs conj(U): conjugate the buffer in place once now, rather than
            # have every product in backward materialise a conjugated copy (measured: the
            # copies took 0.35 s of a 3.4 s step at B=8, H=256, L=16384).
            u_conj = u_f.conj_physical_() if ctx.needs_input_grad[1] else None
            ctx.save_for_backward(u_conj, k_f)
            ctx.n, ctx.length = n, u.shape[-1]
            return y

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, g):
            u_conj, k_f = ctx.saved_tensors                           # conj(U), K
            n = ctx.n
            g_f = torch.fft.rfft(g, n=n)                              # (B, C, H, ..., F)
            grad_u = grad_k = None
            if ctx.needs_input_grad[1]:
                # sum over b one slice at a time, into one buffer: no (B, C, H, ..., F)
                # temporary (einsum permutes g_f into a copy; measured slower)
                acc = g_f[0] * u_conj[0]                              # (C, H, ..., F)
                for b in range(1, g_f.shape[0]):
                    acc.addcmul_(g_f[b], u_conj[b])
                acc = acc.sum_to_size(k_f.shape)                      # block axis summed too
                acc.mul_(2.0 / n)
                acc[..., 0] *= 0.5                                    # DC is read once
                if n % 2 == 0:
                    acc[..., -1] *= 0.5                               # so is Nyquist
                grad_k = acc
            if ctx.needs_input_grad[0]:
                if g_f.shape[1] == 1:
                    prod = g_f.mul_(k_f.conj())[:, 0]                 # C = 1: in place
                else:
                    prod = (g_f * k_f.conj()).sum(1)                  # (B, H, ..., F)
                grad_u = torch.fft.irfft(prod, n=n)[..., :ctx.length]  # (B, H, ..., P)
            return grad_u, grad_k, None, None

    return FFTConv.apply
