"""Options shared by the data commands: where their tasks run (``--executor``, ``-j``, ``--ray-address``)."""

from __future__ import annotations

import argparse
import os
from typing import Any

EXECUTOR_CHOICES = ("local", "threads", "ray")


def add_executor_args(p: argparse.ArgumentParser, workers_flags: tuple[str, ...] = ("-j", "--workers"),
                      workers_help: str = "tasks run at once (when not given: all cores, or the Ray cluster's CPUs)",
                      workers_default: int | None = None, hidden: tuple[str, ...] = ()) -> None:
    """Register ``--executor``, the workers flag(s) (dest ``workers``) and ``--ray-address`` on ``p``.

    ``hidden``: old spellings of the workers flag (``--processes-count``, ``--num_workers``), kept working
    but left out of help."""
    g = p.add_argument_group("execution")
    g.add_argument("--executor", choices=EXECUTOR_CHOICES, default=None,
                   help="where the step's tasks run: local (this machine; the step picks processes or threads), "
                   "threads, or ray; when not given: $DATACOMP_EXECUTOR, else local")
    a = g.add_argument(*workers_flags, *hidden, dest="workers", type=int, default=workers_default, help=workers_help)
    a.hidden_aliases = tuple(hidden)  # type: ignore[attr-defined] # see datacomp.cli._Formatter
    g.add_argument("--ray-address", default=None,
                   help="Ray cluster to use with --executor ray: auto, host:port or ray://host:port "
                   "(when not given: $DATACOMP_RAY_ADDRESS, else start a local one); implies --executor ray")


def executor_from(args: argparse.Namespace) -> Any:
    """The executor the user chose: a name (``local``/``threads``, resolved by the step, which keeps
    its fast local choice for ``local``), a Ray executor, or None (the step's default)."""
    from datacomp.errors import DataCompError

    name = args.executor or os.environ.get("DATACOMP_EXECUTOR") or None
    address = getattr(args, "ray_address", None)
    if address and name is None:
        name = "ray"
    if name is not None and name not in EXECUTOR_CHOICES:
        raise DataCompError(f"DATACOMP_EXECUTOR={name!r}: choose one of {', '.join(EXECUTOR_CHOICES)}")
    if args.workers is not None and args.workers <= 0:
        raise DataCompError(f"--workers must be positive, got {args.workers}")
    if name == "ray":
        from datacomp.engine import get_executor

        return get_executor("ray", args.workers, address)
    if address:
        raise DataCompError(f"--ray-address needs --executor ray (got --executor {name})")
    return name
