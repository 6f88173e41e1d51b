"""``sgconv info``: the version and, per backend, its framework version, device and threads."""

from __future__ import annotations

import os
import platform
import sys

import numpy as np

from ._common import cores, table

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="version, backends, devices and threads",
                       description="Print the sgconv version and, for each backend, its "
                       "framework version, device and thread count, or why it is unavailable.")
    p.set_defaults(func=run)


def _threads(name: str, info) -> str:
    """The CPU threads a backend computes with, where it says (GPU backends: '-')."""
    import sgconv

    device = (info.device or "").lower()
    if not device.startswith("cpu"):
        return "-"
    if name == "numpy":
        return str(getattr(sgconv.backend("numpy"), "workers", None) or cores())
    if name == "torch" and "torch" in sys.modules:
        return str(sys.modules["torch"].get_num_threads())
    if name == "jax":
        return f"{cores()} (XLA pool)"
    return "?"


def run(args) -> int:
    import scipy

    import sgconv

    print(f"sgconv {sgconv.__version__} (python {platform.python_version()}, numpy "
          f"{np.__version__}, scipy {scipy.__version__}) on {platform.system()} "
          f"{platform.machine()}, {cores()} CPU cores available to this process")
    source = ("from SGCONV_BACKEND" if os.environ.get("SGCONV_BACKEND")
              else "the default; set SGCONV_BACKEND or call sgconv.use() to change it")
    print(f"active backend: {sgconv.get_backend()} ({source})")
    rows = []
    infos = sgconv.available_backends()
    for name, info in infos.items():
        if info.usable:
            rows.append([name, "ok", info.version, info.device, _threads(name, info)])
        else:
            rows.append([name, "unavailable", "-", "-", "-"])
    print(table(["backend", "status", "version", "device", "threads"], rows))
    for name, info in infos.items():
        if not info.usable:
            print(f"{name}: {info.reason}")
    return 0
