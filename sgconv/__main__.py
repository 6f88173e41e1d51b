"""``python -m sgconv``: the sgconv command line (see :mod:`sgconv.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
