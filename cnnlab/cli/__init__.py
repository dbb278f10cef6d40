"""The ``cnnlab`` command: ``cnnlab demo | train | predict | inspect | filter | tour | bench | info``.

Every error is one line on stderr, ``cnnlab <command>: <what> (<how to fix>)``, with exit
status 2 (``cnnlab --debug <command>`` shows the traceback instead); Ctrl-C exits with 130.
Each command is a module of this package that adds its own arguments (``add_parser``) and
runs them (``run``).
"""

import argparse
import os
import sys

from .._version import __version__
from . import bench, demo, filter, info, inspect, predict, tour, train
from .common import DEBUG_HELP, HelpFormatter, error_line

__all__ = ["build_parser", "main", "console", "error_line"]

COMMANDS = (demo, train, predict, inspect, filter, tour, bench, info)


def build_parser():
    """The ``cnnlab`` argument parser, one sub-command per task."""
    parser = argparse.ArgumentParser(prog="cnnlab", description="Readable, fast CNNs in Numba.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    commands = parser.add_subparsers(dest="command")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv=None):
    """Run one ``cnnlab`` command; returns its exit status.

    An error is printed as one line, ``cnnlab <command>: <what> (<how to fix>)``, and gives
    status 2 (``--debug`` raises it instead); Ctrl-C gives status 130.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"cnnlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise  # the reader went away: console() ends quietly
    except Exception as exc:
        if args.debug:
            raise
        print(error_line(args.command, exc), file=sys.stderr)
        return 2


def console():
    """The ``cnnlab`` command: :func:`main`, quiet when its output is cut short (``| head``)."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away: send what is left nowhere, as the Python docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code
