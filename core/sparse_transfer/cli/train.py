"""``sparse-transfer train TASK [flags]``: the reference's training scripts.

The flags are parsed (with every Hugging Face `TrainingArguments` flag) into
the task layer's dataclasses and handed to `sparse_transfer.tasks.training.train`;
``sparse-transfer train TASK --help`` lists them all.
"""

from __future__ import annotations

import argparse

from sparse_transfer.tasks.registry import BUILTIN_TASK_NAMES as TASKS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        add_help=False,
        help="fine-tune a (sparse) model on a task with a recipe and an optional teacher",
        description=f"Train: sparse-transfer train {{{','.join(TASKS)}}} --help lists a task's flags.",
    )
    parser.add_argument("task", nargs="?", help=" | ".join(TASKS))
    parser.add_argument("task_argv", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(handler=_handle, accepts_extra=True, _parser=parser)


def _handle(args, extra: list[str]) -> int:
    argv = list(args.task_argv) + list(extra)
    if args.task in (None, "-h", "--help"):
        args._parser.print_help()
        print("\ntasks: " + ", ".join(TASKS))
        return 0 if args.task or "-h" in extra or "--help" in extra else 2
    train_main(args.task, argv)
    return 0


def train_main(task: str, argv: list[str]) -> dict:
    """Runs ``sparse-transfer train TASK`` with `argv` (the flags as on the command line).

    Returns:
        The run summary (`TrainResult.to_dict`): ``task``, ``output_dir``,
        ``metrics``, ``sparsity``, ``truncated``, ...
    """
    from sparse_transfer.cli.task_args import overwrite_requested, parse_train_args
    from sparse_transfer.tasks.registry import get_task
    from sparse_transfer.tasks.summary import print_summary
    from sparse_transfer.tasks.training import train

    spec = get_task(task)
    model_args, data_args, task_args, training_args = parse_train_args(spec, argv)
    overwrite = overwrite_requested(argv)
    summary = train(
        spec.name, model_args, data_args, training_args, task_args, overwrite_output_dir=overwrite
    ).to_dict()
    print_summary(summary)
    return summary
