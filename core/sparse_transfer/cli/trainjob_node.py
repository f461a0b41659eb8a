"""What every process of a multi-node TrainJob runs: train, then rank 0 publishes the result.

    torchrun -m sparse_transfer.cli.trainjob_node --output_uri s3://.../output TASK [train flags]

The inputs (model, teacher, data) are given as s3:// references, which the
training command resolves through the storage cache on every node; the output
directory is local to each pod, so global rank 0, the only one that writes it,
uploads it to ``--output_uri`` (files first, manifest last) for the pipeline
step to download.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sparse_transfer.errors import SparseTransferError

log = logging.getLogger(__name__)


def _output_dir(train_argv: list[str]) -> str:
    for i, arg in enumerate(train_argv):
        if arg == "--output_dir" and i + 1 < len(train_argv):
            return train_argv[i + 1]
        if arg.startswith("--output_dir="):
            return arg.split("=", 1)[1]
    raise SparseTransferError("--output_dir is required: where this node writes the model")


def main(argv: list[str] | None = None) -> int:
    """Parses ``--output_uri TASK FLAGS...``, trains, uploads on rank 0; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m sparse_transfer.cli.trainjob_node")
    parser.add_argument("--output_uri", required=True, help="Where rank 0 publishes the model.")
    parser.add_argument("task", help="The training task, as for `sparse-transfer train`.")
    args, train_argv = parser.parse_known_args(argv)
    try:
        from sparse_transfer import storage
        from sparse_transfer.cli.train import train_main
        from sparse_transfer.training.distributed import barrier, is_main_process

        output_dir = _output_dir(train_argv)
        train_main(args.task, train_argv)
        if is_main_process():
            storage.upload_dir(output_dir, args.output_uri)
            log.info("published %s to %s", output_dir, args.output_uri)
        barrier()  # no node reports success before the model is published
    except SparseTransferError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
