"""The `sparse-transfer` command: argument parsing only, logic lives in the library.

Each subcommand group lives in its own module here (`recipe`, `train`,
`evaluate`, `export`, `benchmark`, `zoo`, `serve`) and exposes
``register(subparsers)``; handlers import heavy libraries lazily so that
``sparse-transfer --help`` stays fast. Groups that live above the library (the
kfp-facing `pipeline` commands in `pipelines.cli`) are plugins: any installed
distribution may declare a ``register`` function in the entry-point group
``sparse_transfer.cli_plugins`` (see pyproject.toml), so this package never
imports them by name.

Errors on bad input (`SparseTransferError`) end as one line on stderr,
``sparse-transfer: error: <message>``, and exit code 2 (as argparse does for bad
flags); ``--debug`` or ``SPARSE_TRANSFER_DEBUG=1`` adds the stack trace.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from sparse_transfer.errors import SparseTransferError

COMMAND_MODULES = (
    "recipe", "train", "evaluate", "export", "benchmark", "zoo", "upstream", "frontier", "serve",
)  # fmt: skip
PLUGIN_GROUP = "sparse_transfer.cli_plugins"
PROG = "sparse-transfer"
#: Environment variable that turns on stack traces, like ``--debug``.
DEBUG_ENV = "SPARSE_TRANSFER_DEBUG"
#: Exit code for bad input, the same as argparse's for a bad flag.
EXIT_BAD_INPUT = 2


def _register_plugins(sub: argparse._SubParsersAction) -> None:
    """Adds every command group declared in the ``sparse_transfer.cli_plugins`` entry points."""
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        entry.load()(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Sparse transfer learning: keep a pre-sparsified transformer sparse while fine-tuning.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"print the stack trace of an error (also: {DEBUG_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"sparse_transfer.cli.{name}").register(sub)
    _register_plugins(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if getattr(args, "accepts_extra", False):
            return int(args.handler(args, extra) or 0)
        return int(args.handler(args) or 0)
    except SparseTransferError as exc:
        if args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            traceback.print_exc()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
