"""A backend plugin that registers every deliberately broken 2D backend for a session.

    pytest conformance/test_conv2d.py --backend-plugin conformance.meta.plugin2d --backend broken2d_circular

shows the 2D suite failing on a planted bug (``conformance.meta.broken2d.BUGS_2D``).
Importing this module installs them; nothing else imports it.
"""

from .broken2d import install

BACKENDS = install()
