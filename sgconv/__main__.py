"""``python -m sgconv``: the sgconv command line (see :mod:`sgconv._cli`)."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
