"""The `sparse-transfer` command: argument parsing only, logic lives in the library.

Each subcommand group lives in its own module here (`recipe`, `train`,
`evaluate`, `export`, `benchmark`, `zoo`, `serve`, `kernels`, `data`) and exposes
``register(subparsers)``; handlers import heavy libraries lazily so that
``sparse-transfer --help`` stays fast. Groups that live above the library (the
kfp-facing `pipeline` commands in `pipelines.cli`) are plugins: any installed
distribution may declare a ``register`` function in the entry-point group
``sparse_transfer.cli_plugins`` (see pyproject.toml), so this package never
imports them by name.

Errors on bad input (`SparseTransferError`) end as one line on stderr,
``sparse-transfer: error: <message>``, and exit code 2 (as argparse does for bad
flags); ``--debug`` or ``SPARSE_TRANSFER_DEBUG=1`` adds the stack trace. So do the
OS errors a user can cause (a read-only or full disk, no permission, a name too
long: one line naming the path) and input nested deeper than Python recurses;
Ctrl-C ends with one line and exit code 130 (128 + SIGINT, as shells report it).
This is the one place: commands do not catch these themselves.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
import traceback

from sparse_transfer.errors import SparseTransferError

COMMAND_MODULES = (
    "recipe", "train", "evaluate", "export", "benchmark", "zoo", "upstream", "frontier", "serve",
    "kernels", "data",
)  # fmt: skip
PLUGIN_GROUP = "sparse_transfer.cli_plugins"
PROG = "sparse-transfer"
#: Environment variable that turns on stack traces, like ``--debug``.
DEBUG_ENV = "SPARSE_TRANSFER_DEBUG"
#: Exit code for bad input, the same as argparse's for a bad flag.
EXIT_BAD_INPUT = 2
#: Exit code after Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130
#: What to do about the OS errors a user's choice of path or disk causes.
_OS_HINTS = {
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.ENOSPC: "no space left on the device: free some or choose another disk",
    errno.EDQUOT: "the disk quota is exceeded: free some space or choose another disk",
    errno.EACCES: "permission denied: choose a folder you may write to",
    errno.EPERM: "operation not permitted: choose a folder you may write to",
    errno.ENAMETOOLONG: "the file name is too long: choose a shorter path",
}


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
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:  # Ctrl-C while the commands' modules import is an interrupt too
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "accepts_extra", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        debug = debug or args.debug
        if getattr(args, "accepts_extra", False):
            return int(args.handler(args, extra) or 0)
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{PROG}: interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (SparseTransferError, OSError, RecursionError) as exc:
        if debug:
            traceback.print_exc()
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _one_line(exc: BaseException) -> str:
    """The message of an error we end a command with, naming the path for OS errors."""
    if isinstance(exc, RecursionError):
        return "the input is nested too deeply to read (Python's recursion limit); flatten it"
    if isinstance(exc, OSError) and not isinstance(exc, SparseTransferError):
        where = exc.filename if exc.filename is not None else "(no path)"
        hint = _OS_HINTS.get(exc.errno or 0) or (exc.strerror or str(exc))
        return f"{where}: {hint} ({errno.errorcode.get(exc.errno or 0, 'OSError')})"
    return str(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
