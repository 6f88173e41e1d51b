"""Conformance plugin: the torch backend with new tensors on CUDA, registered as 'torch_cuda'.

    PYTHONPATH=asv_benchmarks/gpu_plugins python -m pytest conformance \
        --backend-plugin sgconv_torch_cuda --backend torch_cuda

The torch backend keeps tensors on their device and makes new ones (from NumPy) on the
CPU.  The conformance suite builds its inputs from NumPy, so to hold the CUDA code path to
the reference this subclass makes every new tensor on the current CUDA device; everything
else is the torch backend unchanged.  Without CUDA it is unusable, with the reason.

(This folder has no ``__init__.py``: asv does not import it as a benchmark, so registering
the backend happens only where the plugin is asked for.)
"""

import sgconv
from sgconv.backends import BackendUnavailableError
from sgconv.backends.torch import TorchBackend

__all__ = ["TorchCudaBackend"]


class TorchCudaBackend(TorchBackend):
    """TorchBackend whose tensors made from NumPy live on ``cuda`` (the current device)."""

    name = "torch_cuda"

    def load(self) -> None:
        super().load()
        if not self.torch.cuda.is_available():
            raise BackendUnavailableError(
                f"backend 'torch_cuda' needs a CUDA device, and PyTorch "
                f"{self.torch.__version__} sees none")

    def device_description(self) -> str:
        self.load()
        index = self.torch.cuda.current_device()
        return f"cuda:{index} ({self.torch.cuda.get_device_name(index)})"

    def _convert(self, x, dtype):
        return super()._convert(x, dtype).to("cuda")

    def zeros(self, shape, dtype: str, like=None):
        if like is None:
            return self.torch.zeros(tuple(shape), dtype=getattr(self.torch, dtype), device="cuda")
        return super().zeros(shape, dtype, like)


sgconv.register_backend("torch_cuda", TorchCudaBackend, replace=True)
