"""A backend plugin that registers every deliberately broken backend for a whole session.

    pytest conformance --backend-plugin conformance.meta.plugin --backend broken_circular

shows the suite failing on a planted bug (the backends are listed in
``conformance.meta.broken.BUGS``).  Importing this module installs them; nothing else
imports it.
"""

from .broken import install

BACKENDS = install()
