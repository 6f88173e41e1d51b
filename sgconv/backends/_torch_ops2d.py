"""The 2D FFTs of the torch backend as ``torch.library`` custom ops (sgconv/_ops2d.py).

Like ``sgconv::rfft`` and ``sgconv::fft_conv`` (sgconv/backends/torch.py), each op has a
registered backward op and a fake (meta) implementation, so that ``torch.compile`` sees
them as opaque calls: no complex tensor enters an Inductor graph (PyTorch 2.13's Inductor
miscompiles gradients of complex ops fused with index_put; see torch.py).

* ``sgconv::spectrum2d(kx, ky, D, nx, ny, ax, ay)``: the 2D kernel's spectrum from the
  bidirectional axis kernels (2C, H, t), each laid out as in 1D (k0 from lag 0, the first
  ax / ay taps of k1 reversed at the end of the buffer) inside the op,
  K = FFT_nx(lay(kx))[..., :, None] * RFFT_ny(lay(ky))[..., None, :] + D, (C, H, nx, ny//2+1).
* ``sgconv::fft_conv2d(u, K, nx, ny, save)``: y = irfft2(rfft2(u, (nx, ny)) * K)[..., :X, :Y].

Backward, with G the incoming gradient (PyTorch's convention for a complex z: dL/dRe z +
i dL/dIm z) and A = FFT(kx), Bf = RFFT(ky):

* spectrum2d: grad_A = sum_fy G conj(Bf), grad_Bf = sum_fx G conj(A), grad_D = sum Re G;
  then grad_lay(kx) = Re(nx ifft(grad_A)) (the adjoint of a full FFT of a real signal) and
  grad_lay(ky) = ny irfft(grad_Bf w') with w' = 1/2 on the interior bins (irfft counts
  those twice), as ``sgconv::rfft``'s backward; then the layout's adjoint (slices, flip).
* fft_conv2d, with Gy = rfft2(g, (nx, ny)) (zero-padding g is the adjoint of the crop):
  grad_u = irfft2(sum_c Gy conj(K))[..., :X, :Y] (correlation) and
  grad_K = w sum_b Gy conj(U), w = 2/(nx ny) on the interior fy bins, 1/(nx ny) at fy = 0
  and fy = ny/2: the weights with which irfft2 reads each bin (what autograd gives).
"""

from __future__ import annotations

import threading

__all__ = ["custom_ops_2d"]

_LOCK = threading.Lock()
_OPS: dict = {}


def custom_ops_2d(torch) -> dict:
    """Register the 2D ``sgconv::`` custom ops once per process; returns them by name."""
    with _LOCK:
        if not _OPS:
            _OPS.update(_register(torch))
        return _OPS


def _register(torch) -> dict:
    import scipy.fft

    def complex_of(dtype):
        return torch.complex128 if dtype == torch.float64 else torch.complex64

    # The image transforms.  CPU tensors go to scipy.fft, pruned: only the X image rows
    # are transformed along y going in (the nx - X padding rows are zero) and only the X
    # kept rows coming out.  Measured (float32, 2 threads, conv = rfft2, product, irfft2):
    # B=64, H=32, 32 x 32: torch.fft 88 ms, scipy.fft 45 ms, pruned scipy 22 ms; B=8,
    # H=96, 56 x 56: 96, 40, 24 ms; B=2, H=96, 224 x 224: 427, 196, 101 ms.  Other devices
    # (CUDA) use torch.fft.  The output is then (..., X, ny)[..., :Y] on the CPU and
    # (..., nx, ny)[..., :X, :Y] elsewhere: views, with the fake implementations' strides.

    def host(t):
        return t.detach().resolve_conj().numpy()              # the same memory, no copy

    def rfft2(u, nx, ny):
        """rfft2(u, s=(nx, ny)) over the last two axes: (..., nx, ny//2 + 1)."""
        if u.device.type != "cpu":
            return torch.fft.rfft2(u, s=(nx, ny))
        w = torch.get_num_threads()
        a = scipy.fft.rfft(host(u), n=ny, axis=-1, workers=w)          # (..., X, F)
        return torch.from_numpy(scipy.fft.fft(a, n=nx, axis=-2, workers=w, overwrite_x=True))

    def irfft2_crop(p, nx, ny, X, Y, own: bool):
        """irfft2(p, s=(nx, ny))[..., :X, :Y]; own: p is ours to overwrite."""
        if p.device.type != "cpu":
            return torch.fft.irfft2(p, s=(nx, ny))[..., :X, :Y]
        w = torch.get_num_threads()
        a = scipy.fft.ifft(host(p), axis=-2, workers=w, overwrite_x=own)[..., :X, :]
        return torch.from_numpy(scipy.fft.irfft(a, n=ny, axis=-1, workers=w))[..., :Y]

    def fake_crop(like, lead, nx, ny, X, Y):
        """An empty tensor with the strides :func:`irfft2_crop` gives on like's device."""
        if like.device.type == "cpu":
            return like.new_empty((*lead, X, ny))[..., :Y]
        return like.new_empty((*lead, nx, ny))[..., :X, :Y]

    # --- the kernel's spectrum: outer product of the axis spectra, plus D ------------------

    def layout(k, a: int, n: int):
        """The 1D bidirectional layout (sgconv._ops.kernel_layout), (2C, H, t) -> (C, H, <= n):
        k0 from lag 0 on, k1[:a] reversed at the end.  Inside the op: Inductor's CPU code
        for the gradient of this flip fused with F.interpolate's gradient (the sub-kernels'
        upsampling) is the tiled atomic_add that writes out of bounds on PyTorch <= 2.13."""
        C = k.shape[0] // 2
        if a == 0:
            return k[:C]
        pad = torch.nn.functional.pad(k[:C], (0, n - k.shape[-1] - a))
        return torch.cat([pad, k[C:, :, :a].flip(-1)], dim=-1)

    def layout_adjoint(g, k, a: int, n: int):
        """The adjoint of :func:`layout`: a gradient of the buffer (C, H, m) -> (2C, H, t)."""
        C, t = k.shape[0] // 2, k.shape[-1]
        out = g.new_zeros(k.shape)
        m = min(t, g.shape[-1])
        out[:C, :, :m] = g[..., :m]
        if a > 0:
            out[C:, :, :a] = g[..., n - a:].flip(-1)
        return out

    @torch.library.custom_op(
        "sgconv::spectrum2d", mutates_args=(),
        schema="(Tensor kx, Tensor ky, Tensor? D, int nx, int ny, int ax, int ay) -> Tensor")
    def spectrum2d(kx, ky, D, nx, ny, ax, ay):
        k_f = torch.fft.fft(layout(kx, ax, nx), n=nx)[..., :, None] * \
            torch.fft.rfft(layout(ky, ay, ny), n=ny)[..., None, :]
        if D is not None:
            k_f += D[..., None, None]                              # lag (0, 0): every bin
        return k_f                                                 # (C, H, nx, ny//2+1)

    @spectrum2d.register_fake
    def _(kx, ky, D, nx, ny, ax, ay):
        return kx.new_empty((kx.shape[0] // 2, kx.shape[1], nx, ny // 2 + 1),
                            dtype=complex_of(kx.dtype))

    @torch.library.custom_op(
        "sgconv::spectrum2d_backward", mutates_args=(),
        schema="(Tensor grad, Tensor kx, Tensor ky, int nx, int ny, int ax, int ay) "
               "-> (Tensor, Tensor, Tensor)")
    def spectrum2d_backward(grad, kx, ky, nx, ny, ax, ay):
        lx, ly = layout(kx, ax, nx), layout(ky, ay, ny)
        a = torch.fft.fft(lx, n=nx)                                # (C, H, nx)
        b = torch.fft.rfft(ly, n=ny)                               # (C, H, Fy)
        grad_a = (grad @ b.conj()[..., None])[..., 0]              # (C, H, nx): sum over fy
        grad_b = (a.conj()[..., None, :] @ grad)[..., 0, :]        # (C, H, Fy): sum over fx
        grad_lx = (torch.fft.ifft(grad_a) * nx).real[..., :lx.shape[-1]]
        w = torch.ones(grad_b.shape[-1], dtype=grad_b.real.dtype, device=grad_b.device)
        w[1:(ny + 1) // 2] = 0.5                                   # interior bins
        grad_ly = torch.fft.irfft(grad_b * w, n=ny)[..., :ly.shape[-1]] * ny
        grad_D = grad.real.sum((-2, -1))                           # (C, H)
        return layout_adjoint(grad_lx, kx, ax, nx), layout_adjoint(grad_ly, ky, ay, ny), grad_D

    @spectrum2d_backward.register_fake
    def _(grad, kx, ky, nx, ny, ax, ay):
        return kx.new_empty(kx.shape), ky.new_empty(ky.shape), \
            kx.new_empty((kx.shape[0] // 2, kx.shape[1]))

    def spectrum2d_setup(ctx, inputs, output):
        kx, ky, D, nx, ny, ax, ay = inputs
        ctx.save_for_backward(kx, ky)
        ctx.geometry = (nx, ny, ax, ay)

    def spectrum2d_grad(ctx, grad):
        kx, ky = ctx.saved_tensors
        grad_kx, grad_ky, grad_D = spectrum2d_backward(grad, kx, ky, *ctx.geometry)
        need = ctx.needs_input_grad
        return (grad_kx if need[0] else None, grad_ky if need[1] else None,
                grad_D if need[2] else None, None, None, None, None)

    spectrum2d.register_autograd(spectrum2d_grad, setup_context=spectrum2d_setup)

    # --- the convolution: transform, product, inverse, crop --------------------------------

    @torch.library.custom_op(
        "sgconv::fft_conv2d", mutates_args=(),
        schema="(Tensor u, Tensor k_f, int nx, int ny, bool save_spectrum) -> (Tensor, Tensor)")
    def fft_conv2d(u, k_f, nx, ny, save_spectrum):
        B, H, X, Y = u.shape
        F = ny // 2 + 1
        if B == 0:                                                 # MKL refuses empty FFTs
            empty = fake_crop(u, (0, k_f.shape[0], H), nx, ny, X, Y).zero_()
            return empty, u.new_zeros((0, H, nx, F), dtype=k_f.dtype)
        u_f = rfft2(u, nx, ny)[:, None]                            # (B, 1, H, nx, F)
        if save_spectrum:
            prod = u_f * k_f
            saved = u_f[:, 0].conj_physical_()                     # conj(U) for grad_K
        else:
            same = torch.broadcast_shapes(u_f.shape, k_f.shape) == u_f.shape
            prod = u_f.mul_(k_f) if same and u_f.dtype == k_f.dtype else u_f * k_f
            saved = u_f.new_empty((0,))
        # a view of irfft2's buffer: no copy (the layer's reshape makes the one it needs)
        return irfft2_crop(prod, nx, ny, X, Y, own=True), saved

    @fft_conv2d.register_fake
    def _(u, k_f, nx, ny, save_spectrum):
        B, H, X, Y = u.shape
        saved = u.new_empty((B, H, nx, ny // 2 + 1) if save_spectrum else (0,),
                            dtype=complex_of(u.dtype))
        return fake_crop(u, (B, k_f.shape[0], H), nx, ny, X, Y), saved

    @torch.library.custom_op(
        "sgconv::fft_conv2d_backward", mutates_args=(),
        schema="(Tensor g, Tensor u_conj, Tensor k_f, int nx, int ny, int X, int Y, "
               "bool need_u, bool need_k) -> (Tensor, Tensor)")
    def fft_conv2d_backward(g, u_conj, k_f, nx, ny, X, Y, need_u, need_k):
        if g.shape[0] == 0:                                        # empty batch: no gradient
            grad_u = fake_crop(g, (0, g.shape[2]), nx, ny, X, Y).zero_() if need_u \
                else g.new_empty((0,))
            grad_k = torch.zeros_like(k_f) if need_k else g.new_empty((0,))
            return grad_u, grad_k
        g_f = rfft2(g, nx, ny)                                     # (B, C, H, nx, F)
        grad_u = grad_k = g.new_empty((0,))
        if need_k:
            acc = g_f[0] * u_conj[0]                               # (C, H, nx, F): sum over b
            for b in range(1, g_f.shape[0]):
                acc.addcmul_(g_f[b], u_conj[b])
            acc.mul_(2.0 / (nx * ny))
            acc[..., 0] *= 0.5                                     # fy = 0 is read once
            if ny % 2 == 0:
                acc[..., -1] *= 0.5                                # so is fy = ny/2
            grad_k = acc
        if need_u:
            if g_f.shape[1] == 1:
                prod = g_f.mul_(k_f.conj())[:, 0]                  # C = 1: in place
            else:
                prod = (g_f * k_f.conj()).sum(1)                   # (B, H, nx, F)
            grad_u = irfft2_crop(prod, nx, ny, X, Y, own=True)     # (B, H, X, Y)
        return grad_u, grad_k

    @fft_conv2d_backward.register_fake
    def _(g, u_conj, k_f, nx, ny, X, Y, need_u, need_k):
        B, H = g.shape[0], g.shape[2]
        grad_u = fake_crop(g, (B, H), nx, ny, X, Y) if need_u else g.new_empty((0,))
        grad_k = k_f.new_empty(k_f.shape) if need_k else g.new_empty((0,))
        return grad_u, grad_k

    def fft_conv2d_setup(ctx, inputs, output):
        u, k_f, nx, ny, save_spectrum = inputs
        ctx.save_for_backward(output[1], k_f)
        ctx.geometry = (nx, ny, u.shape[-2], u.shape[-1])
        ctx.mark_non_differentiable(output[1])

    def fft_conv2d_grad(ctx, grad_y, grad_saved):
        u_conj, k_f = ctx.saved_tensors
        need_u, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_u, grad_k = fft_conv2d_backward(grad_y, u_conj, k_f, *ctx.geometry, need_u, need_k)
        return (grad_u if need_u else None, grad_k if need_k else None, None, None, None)

    fft_conv2d.register_autograd(fft_conv2d_grad, setup_context=fft_conv2d_setup)
    return {"spectrum2d": spectrum2d, "fft_conv2d": fft_conv2d}
