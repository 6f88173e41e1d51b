"""The conformance suite: Hypothesis property tests that hold any sgconv backend to the
independent float64 reference in ``reference/``.

Modules:
    tolerance   the one tolerance rule (derived from eps, log2 of the FFT length, norms)
    oracle      float64 answers built on ``reference``: parameters as a reference state,
                the analytic adjoint (vector-Jacobian product) of the convolution and layer
    frameworks  what differs per array framework for the suite: device of an array,
                float64 switch (JAX x64), reverse-mode autodiff
    examples    the drawn configuration (:class:`~conformance.examples.Example`) and the
                Hypothesis strategies, with every draw labelled
    properties  the properties as plain functions ``check_*(backend_name, example)``
    meta/       deliberately broken backends and the tests that each one is caught

Run ``pytest conformance`` in a checkout, or ``sgconv check`` where sgconv is installed (see
conformance/README.md).

The suite and the reference are top-level packages of a checkout (``conformance``,
``reference``) and are installed inside the package (``sgconv.conformance``,
``sgconv.reference``); either way the suite imports the reference that sits beside it, as
``from . import reference``.
"""

import importlib as _importlib

_parent = __name__.rpartition(".")[0]                       # "" in a checkout, "sgconv" installed
reference = _importlib.import_module(f"{_parent}.reference" if _parent else "reference")
