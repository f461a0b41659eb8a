"""``python -m sparse_transfer.demo`` (``make demo``): a whole sparse transfer run, offline.

1. makes a tiny 90%-sparse upstream BERT (masked-LM checkpoint, like the
   reference's pruned90 obert-base) and a tiny dense one;
2. fine-tunes the dense one into a teacher with the reference's dense-teacher
   recipe (shortened with recipe args);
3. sparse-transfers the 90%-sparse model onto the same data with the
   reference's SST-2 recipe (constant pruning + QAT + distillation), shortened
   with recipe args, exactly as ``sparse-transfer train text-classification``;
4. prints accuracy, sparsity before/after (zeros kept exactly) and where the
   model went. Everything lands in ``./demo-output/``; runs in about a minute on CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from sparse_transfer import fixtures

TEACHER_ARGS = {"num_epochs": 4, "init_lr": 5e-3}
STUDENT_ARGS = {"num_epochs": 4, "init_lr": 1e-2, "qat_start_epoch": 3.0, "observer_epoch": 3.5}


def run_demo(output: str | Path = "demo-output", rows: int = 256, quiet: bool = False) -> dict:
    """Runs the demo into `output` and returns the student's run summary."""
    from sparse_transfer.recipe import builtin_recipe_path
    from sparse_transfer.tasks import train_main

    out = Path(output).resolve()
    data = fixtures.sentiment_rows(rows + rows // 4, seed=0)
    train = fixtures.write_jsonl(data[:rows], out / "data" / "train.jsonl")
    val = fixtures.write_jsonl(data[rows:], out / "data" / "validation.jsonl")
    upstream = fixtures.make_tiny_bert(
        out / "models" / "upstream-pruned90", task="masked-language-modeling", sparsity=0.9
    )
    dense = fixtures.make_tiny_bert(
        out / "models" / "upstream-dense", task="masked-language-modeling", seed=1
    )
    common = [
        "--task_name", "sst2", "--train_file", str(train), "--validation_file", str(val),
        "--max_seq_length", "32", "--per_device_train_batch_size", "32",
        "--per_device_eval_batch_size", "64", "--do_train", "--do_eval",
        "--evaluation_strategy", "epoch", "--save_strategy", "no",
        "--logging_steps", "10", "--disable_tqdm", "true" if quiet else "false",
        "--report_to", "none",
    ]  # fmt: skip
    teacher_dir = out / "dense_teacher-text_classification_sst2"
    print(f"[1/2] training the dense teacher -> {teacher_dir}", flush=True)
    train_main(
        "text-classification",
        [
            "--output_dir", str(teacher_dir), "--model_name_or_path", str(dense),
            "--recipe", str(builtin_recipe_path("dense_teacher")),
            "--recipe_args", json.dumps(TEACHER_ARGS), "--seed", "20811", *common,
        ],
    )  # fmt: skip
    student_dir = out / "pruned90_quant-text_classification_sst2"
    print(f"[2/2] sparse transfer of the 90%-sparse model -> {student_dir}", flush=True)
    summary = train_main(
        "text-classification",
        [
            "--output_dir", str(student_dir), "--model_name_or_path", str(upstream),
            "--recipe", str(builtin_recipe_path("sst2_pruned90_quant")),
            "--recipe_args", json.dumps(STUDENT_ARGS),
            "--distill_teacher", str(teacher_dir), "--fp16", *common,
        ],
    )  # fmt: skip
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparse_transfer.demo", description=__doc__)
    parser.add_argument("--output", default="demo-output", help="output folder")
    parser.add_argument("--rows", type=int, default=256, help="training rows")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.monotonic()
    summary = run_demo(args.output, args.rows, args.quiet)
    sp = summary["sparsity"]
    acc = summary["metrics"].get("eval_accuracy")
    print(
        "\n== demo finished in {:.0f} s ==\n"
        "  validation accuracy      {:.3f}\n"
        "  sparsity before -> after {:.2%} -> {:.2%}  ({} of {} zeros kept{})\n"
        "  sparse quantized model   {}".format(
            time.monotonic() - start,
            acc if acc is not None else float("nan"),
            sp["before"],
            sp["after"],
            sp["zeros_before"] - sp["zeros_lost"],
            sp["zeros_before"],
            ": exactly" if sp["kept"] else "; SOME LOST",
            summary["output_dir"],
        ),
        flush=True,
    )
    return 0 if sp["kept"] else 1


if __name__ == "__main__":
    sys.exit(main())
