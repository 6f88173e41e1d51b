"""Move arrays between NumPy, CuPy, PyTorch and JAX without copying, through DLPack.

    y = sgconv.interop.to_torch(x)            # x: a CuPy, JAX or NumPy array

Each ``to_*`` function hands the target framework the same memory when the array already
lives on a device that framework can address (the CPU for all four; a CUDA GPU for CuPy,
torch CUDA tensors and JAX on GPU), so that a CuPy result feeds a PyTorch model, or a JAX
array a CuPy kernel, at no cost.  ``copy`` says what may happen otherwise, as in the array
API's ``from_dlpack``:

- ``copy=False`` (the default here): share or fail.  Where sharing is impossible (the
  array is on another device, or the target cannot adopt the buffer as it is laid out)
  :class:`CopyRequiredError` says why and how to allow a copy.  Every result of
  ``copy=False`` is checked to point at the source's memory.
- ``copy=None``: share where possible, copy only where not (e.g. a CPU array to the GPU).
- ``copy=True``: always an independent copy, on the target device.

Writes through a shared array are visible on the other side.  JAX treats its arrays as
immutable: don't write to memory that a JAX array shares.  Arrays stay on their stream
order: each framework's ``from_dlpack`` tells the producer which stream it will read on.

Shape, strides and dtype are kept: x (any shape, any dtype the target supports) comes
back as the same values in the target framework.  None of the frameworks is imported
until a function needs it.
"""

from __future__ import annotations

import importlib

import numpy as np

from .backends._base import BackendUnavailableError, array_framework

__all__ = ["to_numpy", "to_cupy", "to_torch", "to_jax", "device_of", "CopyRequiredError"]

# DLPack device types (dlpack.h, DLDeviceType).
_KDL_CPU, _KDL_CUDA, _KDL_CUDA_HOST, _KDL_ROCM, _KDL_CUDA_MANAGED = 1, 2, 3, 10, 13
_DEVICE_NAMES = {_KDL_CPU: "cpu", _KDL_CUDA: "cuda", _KDL_CUDA_HOST: "cuda_host",
                 _KDL_ROCM: "rocm", _KDL_CUDA_MANAGED: "cuda_managed"}
_INSTALL = {"torch": "pip install 'sgconv[torch]'", "jax": "pip install 'sgconv[jax]'",
            "cupy": "pip install 'sgconv[cupy-cuda12]' or 'sgconv[cupy-cuda13]'"}


class CopyRequiredError(ValueError):
    """Sharing memory was asked for (copy=False) but only a copy can make the array."""


def _import(name: str):
    """Import a framework module, or raise BackendUnavailableError naming the pip extra."""
    root = name.split(".", 1)[0]
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BackendUnavailableError(f"sgconv.interop needs {root} for this conversion, and it "
                                      f"cannot be imported ({exc}): {_INSTALL[root]}") from None


def _check_copy(copy) -> None:
    if not (copy is None or isinstance(copy, (bool, np.bool_))):
        raise TypeError(f"copy must be False (share or fail), None (copy only if needed) or "
                        f"True (always copy), got {copy!r}")


def _check_array(x) -> str:
    """The framework of x ('numpy', 'cupy', 'torch', 'jax' or 'dlpack'), or TypeError."""
    owner = array_framework(x)
    if owner == "numpy" and not isinstance(x, np.ndarray):
        raise TypeError(f"expected an array, got the NumPy scalar {x!r}; wrap it with "
                        f"numpy.asarray first")
    if owner is None:
        if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
            return "dlpack"
        raise TypeError(f"expected a NumPy, CuPy, PyTorch or JAX array (or any object with "
                        f"__dlpack__), got {type(x).__name__}; convert lists with numpy.asarray")
    if owner == "torch" and x.requires_grad:
        raise ValueError("the tensor requires grad: DLPack moves data, not the autograd graph; "
                         "pass x.detach() (and keep x for backward)")
    return owner


def device_of(x) -> tuple[str, int]:
    """Where x's memory lives, from its ``__dlpack_device__``: ('cpu', 0), ('cuda', k), ..."""
    _check_array(x)
    kind, index = x.__dlpack_device__()
    kind = int(kind)
    return _DEVICE_NAMES.get(kind, f"dlpack_device_{kind}"), int(index)


def _data_ptr(x, owner: str) -> int | None:
    """The address of x's first element, or None where the framework does not say."""
    if owner == "numpy":
        return x.__array_interface__["data"][0]
    if owner == "cupy":
        return x.data.ptr
    if owner == "torch":
        return x.data_ptr()
    if owner == "jax":
        try:
            return x.unsafe_buffer_pointer()
        except Exception:  # sharded or deleted arrays have no single pointer
            return None
    return None


def _size(x) -> int:
    return int(np.prod(tuple(x.shape), dtype=np.int64))


def _verify_shared(result, target: str, source, owner: str):
    """Check that a copy=False result points at the source's memory."""
    if _size(source) == 0:
        return result                                              # nothing to share
    src, dst = _data_ptr(source, owner), _data_ptr(result, target)
    if src is not None and dst is not None and src != dst:
        raise CopyRequiredError(
            f"{target} could not adopt the {owner} array's memory as it is laid out (shape "
            f"{tuple(source.shape)}, {_layout(source, owner)}) and made a copy; pass copy=None "
            f"to accept a copy, or give it a 64-byte-aligned array")
    return result


def _layout(x, owner: str) -> str:
    ptr = _data_ptr(x, owner)
    align = f"address mod 64 = {ptr % 64}" if ptr is not None else "address unknown"
    if owner == "torch":
        contiguous = x.is_contiguous()
    elif owner in ("numpy", "cupy"):
        contiguous = bool(x.flags.c_contiguous)
    else:
        contiguous = True
    return f"{'C-contiguous' if contiguous else 'strided'}, {align}"


def _mismatch(target: str, where: str, source_device, owner: str) -> CopyRequiredError:
    kind, index = source_device
    return CopyRequiredError(
        f"cannot share a {owner} array on {kind}:{index} as {target} {where} without copying; "
        f"pass copy=None to copy only when the devices differ (or copy=True to always copy)")


# --- NumPy -----------------------------------------------------------------------------------

def to_numpy(x, *, copy: bool | None = False) -> np.ndarray:
    """x as a NumPy array (host memory).

    x: a NumPy, CuPy, PyTorch or JAX array of any shape and dtype.  Shared with x when x is
    in CPU memory; a GPU array needs copy=None or copy=True (a device-to-host copy).
    """
    _check_copy(copy)
    owner = _check_array(x)
    source = device_of(x)
    if owner == "numpy":
        return x.copy() if copy else x
    if source[0] == "cpu":
        out = _verify_shared(np.from_dlpack(x), "numpy", x, owner)
        return out.copy() if copy else out
    if copy is False:
        raise _mismatch("numpy", "in host memory", source, owner)
    if owner == "cupy":
        return x.get()
    if owner == "torch":
        return x.cpu().numpy()
    if owner == "jax":
        return np.array(x)                                         # device-to-host copy
    return np.from_dlpack(x, device="cpu", copy=True)              # ask the producer for one


# --- CuPy ------------------------------------------------------------------------------------

def _cupy():
    """The cupy module once a GPU answers, else BackendUnavailableError giving the reason."""
    from ._switch import backend
    return backend("cupy").cupy


def to_cupy(x, *, copy: bool | None = False, device: int | None = None):
    """x as a CuPy array on CUDA device ``device``.

    device: a CUDA ordinal (or a cupy.cuda.Device); None means x's own GPU, or CuPy's
    current device when x is in host memory (which then needs copy=None or copy=True).
    """
    _check_copy(copy)
    owner = _check_array(x)
    cp = _cupy()
    source = device_of(x)
    if device is None:
        target = source[1] if source[0] == "cuda" else cp.cuda.Device().id
    else:
        target = int(getattr(device, "id", device))
    if source == ("cuda", target):
        out = x if owner == "cupy" else _verify_shared(cp.from_dlpack(x), "cupy", x, owner)
        if copy:
            with cp.cuda.Device(target):
                return out.copy()
        return out
    if copy is False:
        raise _mismatch("cupy", f"on cuda:{target}", source, owner)
    with cp.cuda.Device(target):
        if source[0] == "cuda":                                    # another GPU: peer copy
            return (x if owner == "cupy" else cp.from_dlpack(x)).copy()
        return cp.asarray(to_numpy(x, copy=None))                  # host-to-device copy


# --- PyTorch ---------------------------------------------------------------------------------

def to_torch(x, *, copy: bool | None = False, device=None):
    """x as a torch.Tensor on ``device`` (anything torch.device accepts).

    device: None means x's own device ('cpu' or 'cuda:k').  The tensor does not require
    grad; call ``.requires_grad_()`` on it where needed.
    """
    _check_copy(copy)
    owner = _check_array(x)
    torch = _import("torch")
    source = device_of(x)
    here = torch.device("cpu") if source[0] == "cpu" else torch.device(source[0], source[1])
    target = here if device is None else torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"cannot make a torch tensor on {target}: this PyTorch "
                         f"({torch.__version__}) has no usable CUDA; pass device='cpu' with "
                         f"copy=None to copy to host")
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    if target == here:
        out = x if owner == "torch" else _verify_shared(torch.from_dlpack(x), "torch", x, owner)
        return out.clone() if copy else out
    if copy is False:
        raise _mismatch("torch", f"on {target}", source, owner)
    if source[0] == "cpu" or (source[0] == "cuda" and torch.cuda.is_available()):
        shared = x if owner == "torch" else torch.from_dlpack(x)   # on x's device, no copy
        return shared.to(target)
    return torch.from_numpy(to_numpy(x, copy=None)).to(target)     # via host memory


# --- JAX -------------------------------------------------------------------------------------

def _dtype_name(x, owner: str) -> str:
    if owner == "torch":
        return str(x.dtype).removeprefix("torch.")
    return np.dtype(x.dtype).name


def _kept_dtype(out, x, owner: str):
    """out, after checking that JAX kept x's dtype (it narrows 64-bit types unless x64 is on)."""
    before, after = _dtype_name(x, owner), _dtype_name(out, "jax")
    if before != after:
        raise TypeError(f"JAX would turn this {before} {owner} array into {after} (its 64-bit "
                        f"mode is off); enable it with jax.config.update('jax_enable_x64', True) "
                        f"or cast the array to {after} first")
    return out


def _jax_device_for(jax, source):
    """The JAX device at the same place as ``source`` ('cpu'/'cuda', index), or None."""
    kind, index = source
    platform = {"cpu": "cpu", "cuda": "gpu", "rocm": "gpu"}.get(kind)
    if platform is None:
        return None
    try:
        devices = jax.devices(platform)
    except RuntimeError:                                           # JAX has no such backend
        return None
    if platform == "cpu":
        return devices[0]
    for d in devices:
        if getattr(d, "local_hardware_id", d.id) == index:
            return d
    return None


def to_jax(x, *, copy: bool | None = False, device=None):
    """x as a jax.Array on ``device`` (a jax.Device).

    device: None means the JAX device where x already is (the CPU, or the same GPU); when
    JAX has no such device, JAX's default device (which needs copy=None or copy=True).
    JAX adopts only aligned buffers (64 bytes on the CPU) and refuses read-only NumPy
    arrays; copy=False then raises CopyRequiredError rather than copying behind your back.
    """
    _check_copy(copy)
    owner = _check_array(x)
    jax = _import("jax")
    dlpack = _import("jax.dlpack")
    source = device_of(x)
    here = _jax_device_for(jax, source)
    target = device if device is not None else (here or jax.devices()[0])
    if here is not None and target == here:
        if owner == "jax":
            return jax.device_put(x, target, may_alias=False) if copy else x
        try:
            out = dlpack.from_dlpack(x)
        except BufferError as exc:                                 # e.g. a read-only NumPy array
            if copy is False:
                raise CopyRequiredError(f"JAX cannot share this {owner} array ({exc}); pass "
                                        f"copy=None to accept a copy") from None
            return _kept_dtype(jax.device_put(to_numpy(x, copy=True), target), x, owner)
        _kept_dtype(out, x, owner)
        src, dst = _data_ptr(x, owner), _data_ptr(out, "jax")
        if src is not None and src == dst:                         # JAX adopted the buffer
            return jax.device_put(out, target, may_alias=False) if copy else out
        if copy is False and _size(x) > 0:
            _verify_shared(out, "jax", x, owner)                   # raises CopyRequiredError
        return out                                                 # JAX already made a copy
    if copy is False:
        raise _mismatch("jax", f"on {target}", source, owner)
    if owner == "jax":
        return jax.device_put(x, target)
    return _kept_dtype(jax.device_put(to_numpy(x, copy=None), target), x, owner)
