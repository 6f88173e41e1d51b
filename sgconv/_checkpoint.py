"""Parameter files: one .npz holding the released state_dict layout (2D layers: the
:func:`~sgconv.to_state_dict2d` layout) and the configuration as JSON, written and read
without pickle.

A file that :func:`load` cannot use (not an .npz archive, truncated or corrupted, another
program's archive, an entry that needs unpickling, a configuration that is malformed or that
its arrays contradict) raises :class:`CheckpointError`, a ValueError that names the file and
says what is wrong with it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
import zlib

import numpy as np

from ._config import SGConvConfig
from ._config2d import SGConv2dConfig
from ._params import Params, _any_to_numpy, _check_dtype_name, _from_state_dict, to_state_dict
from ._params2d import Params2d, from_state_dict2d, to_state_dict2d
from ._switch import backend as _backend

__all__ = ["CheckpointError", "save", "load"]

_CONFIG_KEY = "__sgconv_config__"
_SUFFIX = ".npz"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")          # a zip's first entry; an empty zip
_NPY_MAGIC = b"\x93NUMPY"
_KIND_2D = "sgconv2d"                                 # the stored configuration's "kind"


class CheckpointError(ValueError):
    """A parameter file that :func:`sgconv.load` cannot read: not an sgconv .npz file,
    truncated or corrupted, or inconsistent.  The message names the file and the fault."""


def save(path: str | os.PathLike, params: Params | Params2d) -> str:
    """Write the parameters and their configuration to one .npz file (no pickle).

    The arrays are stored in the released state_dict layout (:class:`sgconv.Params2d`: the
    :func:`~sgconv.to_state_dict2d` layout, and ``"kind": "sgconv2d"`` in the configuration),
    as NumPy arrays of their dtype (bfloat16 is stored as float32); the configuration as a
    JSON string.  As with
    ``numpy.savez``, ``.npz`` is appended to a path that does not end in it (``save("x")``
    writes ``x.npz``, which ``load("x")`` finds).  Returns the path written.
    """
    if isinstance(params, Params):
        state, config = to_state_dict(params), dataclasses.asdict(params.config)
    elif isinstance(params, Params2d):
        state = to_state_dict2d(params)
        config = {"kind": _KIND_2D, **dataclasses.asdict(params.config)}
    else:
        raise TypeError(f"save expects sgconv.Params or sgconv.Params2d, got "
                        f"{type(params).__name__}")
    target = os.fspath(path)
    if not target.endswith(_SUFFIX):
        target += _SUFFIX
    arrays = {k: _any_to_numpy(k, v) for k, v in state.items()}
    arrays[_CONFIG_KEY] = np.asarray(json.dumps(config))
    np.savez(target, **arrays)
    return target


def load(path: str | os.PathLike, *, dtype: str | None = None,
         backend: str | None = None) -> Params | Params2d:
    """Read parameters written by :func:`save` onto ``backend`` (default: the active one):
    :class:`sgconv.Params2d` from a 2D layer's file, :class:`sgconv.Params` otherwise.

    ``path`` is tried as given, then with ``.npz`` appended (what :func:`save` writes).
    dtype: cast to this float dtype (default: the stored one).  Raises FileNotFoundError
    naming the paths tried when neither exists, and :class:`CheckpointError` when the file is
    not a readable sgconv parameter file.
    """
    if dtype is not None:
        dtype = _check_dtype_name(dtype)                  # the caller's mistakes stay theirs
    _backend(backend)
    file = _find(os.fspath(path))
    config, arrays = _read(file)
    try:
        if config.pop("kind", None) == _KIND_2D:
            return from_state_dict2d(arrays, dtype=dtype, backend=backend, **config)
        return _from_state_dict(arrays, dtype, backend, config,
                                given="its stored configuration says {key}={value!r}")
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{file!r}: {exc}") from None


def _find(path: str) -> str:
    tried = [path] if path.endswith(_SUFFIX) else [path, path + _SUFFIX]
    for candidate in tried:
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(2, "no sgconv parameter file at " + " or ".join(map(repr, tried)),
                            path)


def _read(file: str) -> tuple:
    """(configuration dict, {name: array}) of an sgconv .npz file, or CheckpointError."""
    with open(file, "rb") as fh:                          # OSErrors (a folder, no access) pass
        head = fh.read(len(_NPY_MAGIC))
    if head.startswith(_NPY_MAGIC):
        raise CheckpointError(f"{file!r} holds a single NumPy array (.npy), not an sgconv "
                              f"parameter file (an .npz archive written by sgconv.save)")
    if not head.startswith(_ZIP_MAGIC):
        seen = "is empty" if not head else f"starts with {head!r}"
        raise CheckpointError(f"{file!r} is not an sgconv parameter file: an .npz (zip) "
                              f"archive written by sgconv.save was expected, but the file {seen}")
    raw = {}
    try:
        with np.load(file, allow_pickle=False) as archive:
            if _CONFIG_KEY not in archive.files:
                entries = ", ".join(archive.files[:8]) + (", ..." if len(archive.files) > 8
                                                           else "")
                raise CheckpointError(
                    f"{file!r} is not an sgconv parameter file: it has no {_CONFIG_KEY!r} entry "
                    f"(its entries: {entries or 'none'}); write one with sgconv.save.  If it "
                    f"holds a released state_dict's arrays, read it with "
                    f"sgconv.from_state_dict(dict(numpy.load(path)), l_max=...)")
            for key in archive.files:
                try:
                    raw[key] = archive[key]
                except ValueError as exc:
                    if "allow_pickle" not in str(exc):
                        raise
                    raise CheckpointError(
                        f"{file!r}: entry {key!r} holds Python objects (a pickled object "
                        f"array); sgconv parameter files hold numeric arrays only and are read "
                        f"without unpickling, which could run code") from None
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, zlib.error, ValueError, OSError) as exc:
        raise CheckpointError(f"{file!r} is truncated or corrupted: it cannot be read as an "
                              f".npz archive ({type(exc).__name__}: {exc})") from None
    for key, value in raw.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{file!r}: entry {key!r} is not a NumPy array (a "
                                  f"{type(value).__name__} of {len(value)} bytes); not a file "
                                  f"written by sgconv.save")
    return _config(file, raw.pop(_CONFIG_KEY)), _arrays(file, raw)


def _config(file: str, stored: np.ndarray) -> dict:
    """The stored configuration as SGConvConfig keywords, checked, or CheckpointError."""
    if stored.dtype.kind != "U" or stored.ndim != 0:
        raise CheckpointError(f"{file!r}: its {_CONFIG_KEY!r} entry should be a JSON string, "
                              f"but it is a {stored.dtype} array of shape {stored.shape}")
    try:
        config = json.loads(str(stored))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file!r}: its stored configuration is not valid JSON "
                              f"({exc})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{file!r}: its stored configuration should be a JSON object of "
                              f"SGConvConfig fields, got {type(config).__name__}")
    kind = config.get("kind")
    if kind not in (None, _KIND_2D):
        raise CheckpointError(f"{file!r}: its stored configuration has kind {kind!r}; this "
                              f"sgconv reads 1D files (no kind) and {_KIND_2D!r}")
    cls = SGConv2dConfig if kind == _KIND_2D else SGConvConfig
    fields = [f.name for f in dataclasses.fields(cls)]
    values = {k: v for k, v in config.items() if k != "kind"}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise CheckpointError(f"{file!r}: its stored configuration has unknown fields {unknown} "
                              f"({cls.__name__} has {fields}); was it written by a newer sgconv?")
    try:
        cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{file!r}: its stored configuration is invalid: {exc}") from None
    return config


def _arrays(file: str, raw: dict) -> dict:
    for key, value in raw.items():
        if value.dtype.kind not in "fb":                  # floats; the 0-d bool flag
            raise CheckpointError(f"{file!r}: entry {key!r} has dtype {value.dtype}; sgconv "
                                  f"parameter files hold floating-point arrays")
    return raw
