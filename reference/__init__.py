"""Independent float64 NumPy/SciPy reference of SGConv (never imports ``sgconv``).

See ``reference/sgconv_ref.py`` for the literate definition and
``reference/README.md`` for how it maps onto the paper's equations;
``reference/sgconv2d_ref.py`` defines the two-dimensional layer on top of it.
"""

from .sgconv_ref import *  # noqa: F401,F403  (the public functions, listed once there)
from .sgconv_ref import __all__ as _all_1d
from .sgconv2d_ref import *  # noqa: F401,F403  (2D, listed once there)
from .sgconv2d_ref import __all__ as _all_2d

__all__ = list(_all_1d) + list(_all_2d)
