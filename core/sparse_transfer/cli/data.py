"""`sparse-transfer data teacher-label`: unlabelled in-domain text labelled by the teacher."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="Prepare training data.")
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    p = sub.add_parser(
        "teacher-label",
        help="Label unlabelled text with the dense teacher and append it to the training rows.",
        description="Writes --output (JSON lines): --train_file's rows, then each row of "
        "UNLABELED_FILE that is not a training or validation text, labelled with the "
        "teacher's prediction. Pass the result as --train_file of the sparse transfer: the "
        "student then distils the teacher on all of it.",
    )
    p.add_argument("unlabeled_file", help="in-domain text: .jsonl/.csv/.parquet, local or s3://")
    p.add_argument("--teacher", required=True, help="the distillation teacher (zoo stub or path)")
    p.add_argument("--output", required=True, help="a new .jsonl file")
    p.add_argument("--train_file", default=None, help="the labelled training rows (kept first)")
    p.add_argument(
        "--validation_file",
        action="append",
        default=[],
        help="texts never to train on (repeatable)",
    )
    p.add_argument("--input_column_names", default=None, help="comma-separated input column(s)")
    p.add_argument("--label_column_name", default="label")
    p.add_argument(
        "--task_name",
        default=None,
        help="a GLUE task (sst2, ...): integer labels are its label ids, so a teacher with "
        "named labels writes the ids",
    )
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=64)
    p.set_defaults(handler=_teacher_label)


def _teacher_label(args: argparse.Namespace) -> int:
    from sparse_transfer.errors import DataError
    from sparse_transfer.tasks.teacher_labels import label_with_teacher
    from sparse_transfer.tasks.text_classification import GLUE_LABELS

    if args.task_name is not None and not GLUE_LABELS.get(args.task_name):
        raise DataError(
            f"--task_name {args.task_name!r}: not a GLUE classification task "
            f"({', '.join(k for k, v in GLUE_LABELS.items() if v)})"
        )

    columns = (
        [c.strip() for c in args.input_column_names.split(",")] if args.input_column_names else None
    )
    report = label_with_teacher(
        args.teacher,
        args.unlabeled_file,
        args.output,
        train_file=args.train_file,
        validation_files=tuple(args.validation_file),
        input_column_names=columns,
        label_column_name=args.label_column_name,
        label_names=GLUE_LABELS.get(args.task_name) if args.task_name else None,
        max_seq_length=args.max_seq_length,
        batch_size=args.batch_size,
    )
    print(json.dumps(report, indent=1))
    return 0
