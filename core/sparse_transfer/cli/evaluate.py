"""``sparse-transfer evaluate --model_path DIR --task TASK <data flags>``.

Scores a trained model directory (torch) or an ONNX deployment directory
(contains model.onnx) with the task's metrics; prints them, and writes
eval_results.json into --output_dir when given (never into the model).
"""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        add_help=False,
        help="evaluate a torch model dir or ONNX deployment dir on a task's data",
        description="Evaluate: sparse-transfer evaluate --model_path DIR --task TASK "
        "--validation_file FILE [data flags]; --task TASK --help lists all flags.",
    )
    parser.set_defaults(handler=_handle, accepts_extra=True, _parser=parser)


def _handle(args, extra: list[str]) -> int:
    if not extra or (("-h" in extra or "--help" in extra) and "--task" not in extra):
        args._parser.print_help()
        return 0 if extra else 2
    evaluate_main(extra)
    return 0


def evaluate_main(argv: list[str]) -> dict:
    """Runs ``sparse-transfer evaluate`` with `argv`; returns `EvaluationResult.summary`."""
    from sparse_transfer.cli.task_args import parse_evaluate_args
    from sparse_transfer.tasks.evaluation import evaluate
    from sparse_transfer.tasks.summary import print_evaluation

    result = evaluate(*parse_evaluate_args(argv))
    print_evaluation(result.summary())
    return result.summary()
