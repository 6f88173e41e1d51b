"""The ``sgconv`` command: what SGConv is, what this machine can run, and how fast.

    sgconv info                      version, backends, devices, threads
    sgconv kernel [--plot k.png]     the kernel of a configuration or a checkpoint (--params):
                                     scales, decay, parameters
    sgconv bench [--backend ...]     forward (+backward) time and peak memory vs the FFT floor
    sgconv check [--backend ...]     the conformance suite (pytest) with a summary
    sgconv demo                      build a layer, run a long sequence, check it in float64

One module per subcommand (``sgconv.cli.info``, ``.kernel``, ``.bench``, ``.check``,
``.demo``), each with ``add_parser(subparsers)`` and ``run(args)``; what they share is in
``sgconv.cli._common``.  Every subcommand has ``--help``.  Bad arguments give one line on
stderr and exit status 2.  Only NumPy and SciPy are needed, except for ``kernel --plot``
(matplotlib), ``kernel --params FILE.pt`` (PyTorch) and ``check`` (pytest); frameworks are
imported only for the backends a command uses.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import bench, check, demo, info, kernel
from ._common import PROG, CliError

__all__ = ["main", "build_parser"]

#: The subcommands, in the order of ``sgconv --help``.
COMMANDS = (info, kernel, bench, check, demo)


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as one line (plus the usage line) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog=PROG, description="SGConv (Structured Global Convolution): inspect "
                     "kernels, see the backends, benchmark, check and demo.")
    parser.add_argument("--version", action="version", version=f"sgconv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser,
                                required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv=None) -> int:
    """Run the ``sgconv`` command with ``argv`` (default sys.argv[1:]); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if extra and args.command != "check":
        parser.exit(2, f"{PROG}: error: only 'check' passes arguments after '--' on "
                       f"(to pytest)\n")
    args.pytest_args = extra
    try:
        return args.func(args)
    except CliError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `sgconv kernel | head`: stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
