"""The ``datacomp`` command: parse, call one library function, print the result.

Each command lives in its own module here with a ``register(subparsers)`` function; the order of
``COMMANDS`` is the order of the workflow, which is the order ``datacomp --help`` lists them in.

Conventions every command follows (docs/cli.md): ``-o/--output`` for outputs, ``-j/--workers`` for
parallelism, ``--no-progress``, ``--json`` for machine-readable results, ``-v/-q`` and ``--config FILE``
before or after the command, ``allow_abbrev=False``. Old spellings of a flag (``--save_path``,
``--output-dir``, ``--num_workers``, ...) keep working and are hidden from help. Registering commands
imports nothing heavy (no numpy, pyarrow, torch, rich): ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import logging
import os
import sys
import traceback
from typing import Any

from datacomp import __version__
from datacomp.errors import DataCompError, describe

# Command modules in workflow order, then utilities.
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
    "completion",
]

# `datacomp filter ACTION ...` (the original spelling of the filter helpers) -> the command it now is.
FILTER_ACTIONS = {"signals": "filter-signals", "build-centroids": "filter-centroids",
                  "build-targets": "filter-targets", "list": "filter-list"}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Raw descriptions; ``(default: X)`` only where a default says something; hidden flag aliases."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        d = action.default
        if ("%(default)" in help or d is None or d is argparse.SUPPRESS or isinstance(d, bool)
                or d == [] or action.nargs == 0 or "default" in help):
            return help
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            shown = " ".join(map(str, d)) if isinstance(d, list | tuple) else d
            help += f" (default: {shown})"
        return help

    def _format_action_invocation(self, action: argparse.Action) -> str:
        hidden = getattr(action, "hidden_aliases", ())
        if hidden:
            action = copy.copy(action)
            action.option_strings = [s for s in action.option_strings if s not in hidden]
        return super()._format_action_invocation(action)


def _common_parent() -> argparse.ArgumentParser:
    """``-v/-q/--config`` for every command; SUPPRESS defaults so a value given before the command stays."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    g = p.add_argument_group("common options")
    g.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="debug logging, and the traceback behind an error")
    g.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="warnings and errors only")
    g.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                   help="read this command's flags from a YAML or TOML file (keys: long flag names); "
                   "flags on the command line override it")
    return p


_PARENT: argparse.ArgumentParser | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="datacomp",
        formatter_class=_Formatter,
        allow_abbrev=False,
        description=(
            "The DataComp workflow, one command per step:\n"
            "  download -> filter -> reshard -> train -> evaluate -> report / submit\n"
            "`datacomp demo` runs the whole experiment on the embedded miniature world.\n"
            "Every command takes -v/-q, --config FILE (its flags from YAML/TOML) and --help; see docs/cli.md."
        ),
    )
    parser.add_argument("--version", action="version", version=f"datacomp {__version__}",
                        help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and the traceback behind an error")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="read the command's flags from a YAML or TOML file (also accepted after the command)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMANDS:
        importlib.import_module(f"datacomp.cli.{name}").register(sub)
    return parser


def add_parser(sub: argparse._SubParsersAction, name: str, help: str, description: str | None = None,
               **kw: Any) -> argparse.ArgumentParser:
    """A sub-command parser with the project's help formatting, ``-v/-q/--config`` and no prefix matching."""
    global _PARENT
    if _PARENT is None:
        _PARENT = _common_parent()
    return sub.add_parser(name, help=help, description=description or help, formatter_class=_Formatter,
                          parents=[_PARENT], allow_abbrev=False, **kw)


def flag(p: argparse.ArgumentParser | argparse._ArgumentGroup, *names: str, hidden: tuple[str, ...] = (),
         **kw: Any) -> argparse.Action:
    """``p.add_argument(*names, *hidden, **kw)`` with the ``hidden`` spellings left out of help.

    ``hidden`` are old spellings (``--save_path``, ``--output-dir``, ...) that keep working.
    """
    action = p.add_argument(*names, *hidden, **kw)
    action.hidden_aliases = tuple(hidden)  # type: ignore[attr-defined]
    return action


def add_output(p: argparse.ArgumentParser | argparse._ArgumentGroup, *hidden: str, **kw: Any) -> argparse.Action:
    """``-o/--output`` (dest ``output``), with old spellings hidden."""
    kw.setdefault("dest", "output")
    return flag(p, "-o", "--output", hidden=hidden, **kw)


def add_json(p: argparse.ArgumentParser, what: str = "the result") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON (machine-readable) instead of text")


def add_no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")


def print_json(obj: Any) -> None:
    import json

    print(json.dumps(obj, indent=2, default=str))


# ------------------------------------------------------------------ argv: old spellings, --config


def _command_index(argv: list[str]) -> int | None:
    """Index of the command word in ``argv`` (after the global options), or None."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--config":
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        return i
    return None


def rewrite_argv(argv: list[str]) -> list[str]:
    """``filter signals|build-centroids|build-targets|list ...`` (the helpers' old spellings) -> their commands."""
    i = _command_index(argv)
    if i is not None and argv[i] == "filter" and i + 1 < len(argv) and argv[i + 1] in FILTER_ACTIONS:
        return [*argv[:i], FILTER_ACTIONS[argv[i + 1]], *argv[i + 2:]]
    return argv


def _leaf_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The (sub)parser the command words in ``argv`` select."""
    p, rest = parser, argv
    while True:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        i = _command_index(rest)
        if not subs or i is None or rest[i] not in subs[0].choices:
            return p
        p, rest = subs[0].choices[rest[i]], rest[i + 1:]


def _config_path(argv: list[str]) -> str | None:
    path = None
    for i, a in enumerate(argv):
        if a == "--":
            break
        if a == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif a.startswith("--config="):
            path = a.split("=", 1)[1]
    return path


def load_config(path: str) -> dict[str, Any]:
    """A YAML (``.yaml``/``.yml``) or TOML (``.toml``) mapping of flag name -> value."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataCompError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    try:
        if path.endswith(".toml"):
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        else:
            import yaml

            data = yaml.safe_load(raw.decode("utf-8"))
    except Exception as e:  # noqa: BLE001 - any parse failure of a user file is one line
        raise DataCompError(f"--config {path}: not valid {'TOML' if path.endswith('.toml') else 'YAML'} "
                            f"({type(e).__name__}: {e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataCompError(f"--config {path}: expected a mapping of flag names to values, got {type(data).__name__}")
    return data


_UNSET = object()


def apply_config(parser: argparse.ArgumentParser, path: str, config: dict[str, Any]) -> dict[str, Any]:
    """Make ``config``'s values the defaults of ``parser``'s flags; return dest -> (action, value) to fill in.

    Required flags found in the file stop being required; the file's values are converted and checked
    by the flag's own ``type`` and ``choices``. A key naming no flag of the command is an error.
    """
    by_name: dict[str, argparse.Action] = {}
    for a in parser._actions:
        for s in a.option_strings:
            if s.startswith("--"):
                by_name[s[2:]] = a
    pending: dict[str, Any] = {}
    for key, value in config.items():
        k = str(key)
        action = by_name.get(k) or by_name.get(k.replace("_", "-"))
        if action is None or action.dest in ("help", "config", "version") or isinstance(
                action, argparse._SubParsersAction):
            cmd = parser.prog
            raise DataCompError(f"--config {path}: unknown key {k!r} (not a flag of `{cmd}`; see `{cmd} --help`)")
        pending[action.dest] = (action, _config_value(parser, action, k, value, path))
        action.required = False
        if isinstance(action, argparse._AppendAction | argparse._ExtendAction):
            action.default = None
        else:
            action.default = _UNSET
    return pending


def _config_value(parser: argparse.ArgumentParser, action: argparse.Action, key: str, value: Any, path: str) -> Any:
    where = f"--config {path}: {key}"
    if action.nargs == 0:  # store_true / store_false / count
        if not isinstance(value, bool | int):
            raise DataCompError(f"{where}: expected true or false, got {value!r}")
        return action.const if value else (not action.const if isinstance(action.const, bool) else action.default)
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int) or isinstance(
        action, argparse._AppendAction | argparse._ExtendAction)
    values = value if isinstance(value, list) else [value]
    if not many and isinstance(value, list):
        raise DataCompError(f"{where}: expected one value, got a list")
    try:
        out = [parser._get_value(action, str(v) if not isinstance(v, bool) else str(v).lower()) for v in values]
        for v in out:
            parser._check_value(action, v)
    except argparse.ArgumentError as e:
        raise DataCompError(f"{where}: {e.message}") from None
    return out if many else out[0]


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Old spellings rewritten, ``--config FILE`` applied (the command line wins), then argparse."""
    argv = rewrite_argv(argv)
    pending: dict[str, Any] = {}
    cfg = _config_path(argv)
    if cfg is not None:
        leaf = _leaf_parser(parser, argv)
        if leaf is parser:
            raise DataCompError("--config goes with a command: datacomp COMMAND --config FILE")
        pending = apply_config(leaf, cfg, load_config(cfg))
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the command's own usage, not the top level's
        _leaf_parser(parser, argv).error(f"unrecognized arguments: {' '.join(extra)}")
    for dest, (_action, value) in pending.items():
        if getattr(args, dest, _UNSET) in (_UNSET, None):
            setattr(args, dest, value)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    try:
        parser = build_parser()  # imports every command module: a broken install fails here
    except Exception as e:  # noqa: BLE001 - the one error path
        return _report(e, verbose=verbose, output=None)
    try:
        args = parse(parser, argv)
    except DataCompError as e:  # a bad --config file
        return _report(e, verbose=verbose, output=None)
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
    if getattr(args, "no_progress", False):
        os.environ["TQDM_DISABLE"] = "1"  # the engine's and the libraries' tqdm bars
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
