"""``sparse-transfer train TASK [flags]``: the reference's training scripts.

Flags are passed through untouched to `sparse_transfer.tasks.train_main`, which
parses them together with every Hugging Face `TrainingArguments` flag;
``sparse-transfer train TASK --help`` lists them all.
"""

from __future__ import annotations

import argparse

TASKS = (
    "text-classification",
    "token-classification",
    "question-answering",
    "masked-language-modeling",
)


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
    from sparse_transfer.tasks import train_main

    train_main(args.task, argv)
    return 0
