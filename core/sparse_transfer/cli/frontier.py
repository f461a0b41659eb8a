"""`sparse-transfer frontier trial`: one frontier point end to end (a Katib trial's command)."""

from __future__ import annotations

import argparse

from sparse_transfer.tasks.names import TEXT_CLASSIFICATION


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "frontier", help="The accuracy-latency frontier, one point at a time."
    )
    sub = parser.add_subparsers(dest="frontier_command", required=True, metavar="SUBCOMMAND")
    p = sub.add_parser(
        "trial",
        help="Train, export and benchmark one point; print NAME=VALUE lines (Katib's StdOut collector).",
    )
    p.add_argument("--point", required=True, help="STRUCTURE:SPARSITY, e.g. block4:0.9")
    p.add_argument("--task", default=TEXT_CLASSIFICATION)
    p.add_argument(
        "--model_name_or_path", required=True, help="dense upstream: stub, s3://, folder, hub id"
    )
    p.add_argument("--distill_teacher", default="disable")
    p.add_argument("--train_file", required=True)
    p.add_argument("--validation_file", required=True)
    p.add_argument("--task_name", default="")
    p.add_argument("--recipe_args", default="", help="JSON variables shared by every point")
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--per_device_train_batch_size", type=int, default=32)
    p.add_argument("--per_device_eval_batch_size", type=int, default=32)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--engine", default="onnxruntime")
    p.add_argument("--work_dir", required=True)
    p.add_argument("--zoo", default="")
    p.set_defaults(handler=_trial)


def _trial(args: argparse.Namespace) -> int:
    from sparse_transfer.pipeline.frontier_steps import trial_step

    flags = {
        k: getattr(args, k)
        for k in (
            "max_seq_length",
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "seed",
        )
    }
    measured = trial_step(
        args.point, args.work_dir, task=args.task, model=args.model_name_or_path,
        train_file=args.train_file, validation_file=args.validation_file,
        teacher=args.distill_teacher, task_name=args.task_name, recipe_args=args.recipe_args,
        flags=flags, engine=args.engine, zoo=args.zoo,
    )  # fmt: skip
    # Katib's default StdOut filter: ([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)
    print(f"{measured['metric_name']}={measured['metric']}")
    print(f"latency_ms={measured['latency_ms']}")
    return 0
