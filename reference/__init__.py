"""Independent float64 NumPy/SciPy reference of SGConv (never imports ``sgconv``).

See ``reference/sgconv_ref.py`` for the literate definition and
``reference/README.md`` for how it maps onto the paper's equations.
"""

from .sgconv_ref import (
    cat_kernel,
    conv,
    conv_bidirectional,
    conv_causal,
    gelu,
    init_state,
    kernel,
    kernel_from_raw,
    layer,
    n_scales,
    normaliser,
    num_parameters,
    scale_factor,
    upsample,
)

__all__ = [
    "n_scales",
    "scale_factor",
    "upsample",
    "cat_kernel",
    "normaliser",
    "kernel_from_raw",
    "kernel",
    "init_state",
    "num_parameters",
    "conv_causal",
    "conv_bidirectional",
    "conv",
    "gelu",
    "layer",
]
