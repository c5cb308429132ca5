"""The ``datacomp`` command: parse, call one library function, print the result.

Each command lives in its own module here with a ``register(subparsers)`` function; the order of
``COMMANDS`` is the order of the workflow, which is the order ``datacomp --help`` lists them in.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from datacomp import __version__
from datacomp.errors import describe

# (module, one-line summary) in workflow order, then utilities.
COMMANDS: list[str] = [
    "download",
    "filter",
    "reshard",
    "train",
    "evaluate",
    "report",
    "submit",
    "leaderboard",
    "compare",
    "demo",
    "synth",
    "embed",
    "dedup",
    "tasks",
    "download_evalsets",
    "scales",
    "subset",
]


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="datacomp",
        formatter_class=_Formatter,
        description=(
            "The DataComp workflow, one command per step:\n"
            "  download -> filter -> reshard -> train -> evaluate -> report / submit\n"
            "`datacomp demo` runs the whole experiment on the embedded miniature world."
        ),
    )
    parser.add_argument("--version", action="version", version=f"datacomp {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMANDS:
        importlib.import_module(f"datacomp.cli.{name}").register(sub)
    return parser


def add_parser(sub: argparse._SubParsersAction, name: str, help: str, description: str | None = None
               ) -> argparse.ArgumentParser:
    """A sub-command parser with the project's help formatting."""
    return sub.add_parser(name, help=help, description=description or help, formatter_class=_Formatter)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()  # imports every command module: a broken install fails here
    except Exception as e:  # noqa: BLE001 - the one error path
        argv_ = sys.argv[1:] if argv is None else argv
        return _report(e, verbose="-v" in argv_ or "--verbose" in argv_, output=None)
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    # Our loggers at the chosen level; third-party ones (open_clip logs INFO on the root logger for
    # every model it builds) only at WARNING unless -v.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("datacomp").setLevel(level)
    for noisy in ("urllib3", "PIL", "matplotlib", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted: completed work is kept; re-run the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:  # noqa: BLE001 - the one error path: known classes become one line
        return _report(e, verbose=args.verbose, output=_output_of(args))
    return int(rc or 0)


def _report(e: Exception, verbose: bool, output: str | None) -> int:
    """Print the one ``error:`` line for a known class of failure (after the traceback with -v)."""
    known = describe(e, output=output)
    if known is None:
        raise  # a bug: the traceback is the report
    if verbose:
        traceback.print_exc()
    print(f"error: {known[0]}", file=sys.stderr)
    return known[1]


def _output_of(args: argparse.Namespace) -> str | None:
    """The step's output location, named in an environment error that names no file."""
    for name in ("output", "output_dir", "out", "shards_dir", "data_dir"):
        v = getattr(args, name, None)
        if isinstance(v, str | os.PathLike):
            return os.fspath(v)
    return None


if __name__ == "__main__":
    sys.exit(main())
