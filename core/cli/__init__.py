"""The `sparse-transfer` command: argument parsing only, logic lives in the library.

Each subcommand group lives in its own module here (`recipe`, `train`,
`evaluate`, `export`, `benchmark`, `zoo`, `pipeline`, `serve`) and exposes
``register(subparsers)``; handlers import heavy libraries lazily so that
``sparse-transfer --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from sparse_transfer.errors import SparseTransferError

COMMAND_MODULES = ("recipe", "train", "evaluate", "export", "benchmark", "zoo", "pipeline", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparse-transfer",
        description="Sparse transfer learning: keep a pre-sparsified transformer sparse while fine-tuning.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"sparse_transfer.cli.{name}")
        except ModuleNotFoundError as exc:  # a command group not built yet
            if exc.name == f"sparse_transfer.cli.{name}":
                continue
            raise
        module.register(sub)
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
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
