"""sgconv.interop: zero-copy moves between NumPy, PyTorch, JAX (CPU here) and CuPy (GPU).

Sharing is proven, not assumed: the data pointers are compared and, where the framework
allows writes, a write through one side is read back through the other.
"""

import numpy as np
import pytest

import sgconv
from sgconv import interop
from sgconv.interop import CopyRequiredError

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")


def aligned(shape, dtype="float32", align=64):
    """A C-contiguous array whose data starts on an ``align``-byte boundary (JAX needs 64)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buf = np.empty(nbytes + align, np.uint8)
    start = (-buf.ctypes.data) % align
    out = buf[start:start + nbytes].view(dtype).reshape(shape)
    out[...] = np.arange(out.size).reshape(shape).astype(dtype)
    return out


def ptr(x):
    """The address of x's first element, read through x's own framework."""
    owner = sgconv.backends.array_framework(x)
    if owner == "numpy":
        return x.ctypes.data
    if owner == "torch":
        return x.data_ptr()
    if owner == "jax":
        return x.unsafe_buffer_pointer()
    if owner == "cupy":
        return x.data.ptr
    raise AssertionError(type(x))


# --- CPU: NumPy <-> PyTorch <-> JAX ----------------------------------------------------------

def test_numpy_and_torch_share_memory_both_ways():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = interop.to_torch(a)
    assert isinstance(t, torch.Tensor) and t.shape == (3, 4) and t.dtype == torch.float32
    assert ptr(t) == ptr(a)
    a[1, 2] = -5.0
    assert t[1, 2].item() == -5.0                                 # a write through NumPy ...
    t[0, 0] = 7.0
    assert a[0, 0] == 7.0                                         # ... and through torch

    back = interop.to_numpy(t)
    assert ptr(back) == ptr(a)
    back[2, 3] = 11.5
    assert t[2, 3].item() == 11.5


def test_jax_shares_aligned_numpy_and_torch_buffers():
    a = aligned((4, 5))
    j = interop.to_jax(a)
    assert isinstance(j, jax.Array) and j.shape == (4, 5) and j.dtype == np.float32
    assert ptr(j) == ptr(a)
    np.testing.assert_array_equal(np.asarray(j), a)

    n = interop.to_numpy(j)
    assert ptr(n) == ptr(j)

    t = torch.arange(20, dtype=torch.float32).reshape(4, 5)      # torch's allocator aligns to 64
    jt = interop.to_jax(t)
    assert ptr(jt) == ptr(t)
    t[3, 4] = 100.0
    assert float(jt[3, 4]) == 100.0                               # the same memory, seen by JAX

    tj = interop.to_torch(j)
    assert ptr(tj) == ptr(j)


def test_strided_views_are_shared_not_copied():
    a = aligned((3, 4))
    at = a.T                                                      # (4, 3), strides (4, 16) bytes
    t = interop.to_torch(at)
    assert ptr(t) == ptr(a) and t.stride() == (1, 4)
    np.testing.assert_array_equal(t.numpy(), at)
    j = interop.to_jax(at)
    assert ptr(j) == ptr(a)
    np.testing.assert_array_equal(np.asarray(j), at)


@pytest.mark.parametrize("dtype", ["float16", "float32", "int32", "complex64", "uint8"])
def test_round_trip_keeps_values_and_dtype(dtype):
    a = aligned((2, 3, 5), dtype)
    t = interop.to_torch(a)
    j = interop.to_jax(t)
    n = interop.to_numpy(j)
    assert n.dtype == np.dtype(dtype) and n.shape == a.shape
    np.testing.assert_array_equal(n, a)
    assert ptr(t) == ptr(j) == ptr(n) == ptr(a)


def test_float64_to_jax_without_x64_is_refused_not_narrowed():
    a = aligned((8,), "float64")
    if jax.config.jax_enable_x64:
        assert interop.to_jax(a).dtype == np.float64
        return
    for copy in (False, None, True):
        with pytest.raises(TypeError, match=r"float64 numpy array into float32 .*jax_enable_x64"):
            interop.to_jax(a, copy=copy)


def test_copy_true_is_an_independent_copy():
    a = aligned((3, 4))
    for convert in (interop.to_torch, interop.to_jax, interop.to_numpy):
        c = convert(a, copy=True)
        assert ptr(c) != ptr(a), convert.__name__
        np.testing.assert_array_equal(np.asarray(c), a)
    t = interop.to_torch(a, copy=True)
    a[0, 0] = -1.0
    assert t[0, 0].item() == 0.0                                  # the copy did not follow


def test_same_framework_is_returned_as_is_unless_copy():
    a = aligned((2, 2))
    t = torch.ones(3)
    j = interop.to_jax(a)
    assert interop.to_numpy(a) is a
    assert interop.to_torch(t) is t
    assert interop.to_jax(j) is j
    assert ptr(interop.to_torch(t, copy=True)) != ptr(t)


def test_unaligned_buffer_to_jax_needs_permission_to_copy():
    base = aligned((17,))
    a = base[1:]                                                  # 4 bytes past a 64-byte boundary
    with pytest.raises(CopyRequiredError, match=r"address mod 64 = 4.*copy=None"):
        interop.to_jax(a)
    j = interop.to_jax(a, copy=None)
    np.testing.assert_array_equal(np.asarray(j), a)
    assert ptr(j) != ptr(a)


def test_read_only_numpy_to_jax_needs_permission_to_copy():
    a = aligned((6,))
    a.flags.writeable = False
    with pytest.raises(CopyRequiredError, match=r"JAX cannot share this numpy array.*copy=None"):
        interop.to_jax(a)
    np.testing.assert_array_equal(np.asarray(interop.to_jax(a, copy=None)), a)


def test_device_of_reads_dlpack_device():
    assert interop.device_of(np.zeros(2)) == ("cpu", 0)
    assert interop.device_of(torch.zeros(2)) == ("cpu", 0)
    assert interop.device_of(jax.device_put(np.zeros(2), jax.devices("cpu")[0])) == ("cpu", 0)


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(TypeError, match=r"got list; convert lists with numpy.asarray"):
        interop.to_torch([1.0, 2.0])
    with pytest.raises(TypeError, match=r"NumPy scalar"):
        interop.to_jax(np.float32(1.0))
    for bad in (1, 0, "yes"):
        with pytest.raises(TypeError, match=r"copy must be False .*None .*True"):
            interop.to_numpy(np.zeros(2), copy=bad)
    with pytest.raises(ValueError, match=r"requires grad.*x.detach\(\)"):
        interop.to_numpy(torch.ones(2, requires_grad=True))


def test_to_torch_on_cuda_without_cuda_says_so():
    if torch.cuda.is_available():
        pytest.skip("this PyTorch has CUDA: the GPU tests below cover it")
    with pytest.raises(ValueError, match=r"has no usable CUDA; pass device='cpu'"):
        interop.to_torch(np.zeros(2), device="cuda", copy=None)


def test_to_cupy_without_a_gpu_gives_the_backends_reason():
    info = sgconv.available_backends()["cupy"]
    if info.usable:
        pytest.skip("CuPy runs here: the GPU tests below cover to_cupy")
    with pytest.raises(sgconv.BackendUnavailableError) as caught:
        interop.to_cupy(np.zeros(2), copy=None)
    assert str(caught.value) == info.reason


# --- GPU: CuPy <-> torch CUDA <-> JAX GPU ---------------------------------------------------

@pytest.fixture(scope="module")
def cp():
    info = sgconv.available_backends()["cupy"]
    if not info.usable:
        pytest.skip(info.reason)
    return sgconv.backend("cupy").cupy


def _torch_cuda():
    if not torch.cuda.is_available():
        pytest.skip(f"PyTorch {torch.__version__} has no usable CUDA device")


def _jax_gpu():
    try:
        return jax.devices("gpu")[0]
    except RuntimeError as exc:
        pytest.skip(f"JAX {jax.__version__} has no GPU backend ({exc})")


def test_cupy_and_torch_cuda_share_memory(cp):
    _torch_cuda()
    x = cp.arange(12, dtype=cp.float32).reshape(3, 4)
    t = interop.to_torch(x)
    assert t.is_cuda and t.device.index == x.device.id and ptr(t) == ptr(x)
    x[1, 1] = -3.0
    assert t[1, 1].item() == -3.0
    t[2, 3] = 9.0
    assert float(x[2, 3]) == 9.0
    y = interop.to_cupy(t)
    assert ptr(y) == ptr(x)


def test_cupy_and_jax_gpu_share_memory(cp):
    gpu = _jax_gpu()
    x = cp.arange(12, dtype=cp.float32).reshape(3, 4)
    j = interop.to_jax(x)
    assert j.devices() == {gpu} and ptr(j) == ptr(x)
    np.testing.assert_array_equal(np.asarray(j), cp.asnumpy(x))
    y = interop.to_cupy(j)
    assert ptr(y) == ptr(j)
    if torch.cuda.is_available():
        assert ptr(interop.to_torch(j)) == ptr(j)


def test_host_and_gpu_move_only_with_permission(cp):
    a = aligned((3, 4))
    with pytest.raises(CopyRequiredError,
                       match=r"numpy array on cpu:0 as cupy on cuda:\d+.*copy=None"):
        interop.to_cupy(a)
    x = interop.to_cupy(a, copy=None)
    assert isinstance(x, cp.ndarray) and x.device.id == cp.cuda.Device().id
    np.testing.assert_array_equal(cp.asnumpy(x), a)
    with pytest.raises(CopyRequiredError, match=r"cupy array on cuda:\d+ as numpy in host memory"):
        interop.to_numpy(x)
    np.testing.assert_array_equal(interop.to_numpy(x, copy=None), a)
    if torch.cuda.is_available():
        t = interop.to_torch(a, device="cuda", copy=None)
        assert t.is_cuda
        np.testing.assert_array_equal(t.cpu().numpy(), a)


def test_copy_between_two_gpus(cp):
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two CUDA devices")
    with cp.cuda.Device(0):
        x = cp.arange(6, dtype=cp.float32)
    with pytest.raises(CopyRequiredError, match=r"cuda:0 as cupy on cuda:1"):
        interop.to_cupy(x, device=1)
    y = interop.to_cupy(x, device=1, copy=None)
    assert y.device.id == 1
    np.testing.assert_array_equal(cp.asnumpy(y), cp.asnumpy(x))
