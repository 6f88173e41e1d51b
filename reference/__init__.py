"""Independent float64 NumPy/SciPy reference of SGConv (never imports ``sgconv``).

See ``reference/sgconv_ref.py`` for the literate definition and
``reference/README.md`` for how it maps onto the paper's equations.
"""

from .sgconv_ref import *  # noqa: F401,F403  (the public functions, listed once there)
from .sgconv_ref import __all__  # noqa: F401
