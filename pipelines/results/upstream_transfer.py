"""Transfer from any published upstream and compare it, row by row, with the real-results model.

Issue 25 asks what an upstream is worth downstream: the real-results sparse transfer (same
teacher, data, recipe, seed and run config) started from another upstream, scored as int8 ONNX
on both validation sets and compared with the published real-results model (the 400-step GMP
upstream) on the same rows (`paired.paired_stats`). Run after the default stages::

    python -m pipelines.results.upstream_transfer --out real-results-output \\
        --upstream zoo:nlp/masked_language_modeling/minilm-l6/pytorch/huggingface/general/pruned90-cpu90min \\
        --name cpu90min --json docs/results/cpu-upstream.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: The columns and length the real-results data and run config use.
PARAMS = {"label_column_name": "label", "input_column_names": "sentence", "max_seq_length": 64}


def transfer_stub(name: str) -> str:
    from pipelines.results.settings import ARCH

    return (
        f"zoo:nlp/sentiment_analysis/{ARCH}/pytorch/huggingface/movie_reviews/pruned90_quant-{name}"
    )


def upstream_facts(stub: str, root: str) -> dict[str, Any]:
    """What the upstream's card says about it: pruning facts and quality figures."""
    from sparse_transfer.zoo import card

    meta = card(stub, root=root)
    keep = ("recipe_name", "recipe_args", "structure", "method", "sparsity", "overall_sparsity",
            "train_steps", "train_samples", "train_seconds", "resumed_from", "metrics")  # fmt: skip
    return {"stub": stub, "corpus": (meta.get("corpus") or {}).get("corpus"),
            **{k: meta[k] for k in keep if k in meta}}  # fmt: skip


def compare(baseline: dict[str, Any], candidate: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per dataset: both accuracies and candidate - baseline with its paired standard error.

    Args:
        baseline / candidate: dataset -> per-row correctness on the same rows.
    """
    from pipelines.results.paired import paired_stats

    if set(baseline) != set(candidate):
        raise ValueError(f"datasets differ: {sorted(baseline)} vs {sorted(candidate)}")
    return {ds: paired_stats(baseline[ds], candidate[ds]) for ds in sorted(baseline)}


def score(deployment: Path, out: Path) -> dict[str, Any]:
    """Per dataset: does the int8 deployment predict each validation row's label?"""
    from pipelines.results.paired import onnx_right
    from sparse_transfer.embedded.movie_reviews import DATASETS

    return {ds: onnx_right(deployment, out / "data" / f"validation_{ds}.jsonl", PARAMS)
            for ds in DATASETS}  # fmt: skip


def published(stub: str, root: str) -> Path | None:
    """The deployment published at `stub`, or None when nothing is published there yet."""
    from sparse_transfer.errors import ZooError
    from sparse_transfer.zoo import resolve

    try:
        return Path(resolve(stub, "deployment", root=root))
    except ZooError:
        return None


def published_card(stub: str, root: str) -> dict[str, Any] | None:
    """The card of the entry published at `stub`, or None when nothing is published there."""
    from sparse_transfer.errors import ZooError
    from sparse_transfer.zoo import card

    try:
        return card(stub, root=root)
    except ZooError:
        return None


def recipe_args(epochs: float) -> dict[str, float]:
    """The real-results recipe variables for `epochs` (QAT over the last 40%, observers frozen
    at 92%, as the 5-epoch run config has them: 3.0 and 4.6)."""
    return {"num_epochs": epochs, "init_lr": 1.5e-4, "qat_start_epoch": round(0.6 * epochs, 4),
            "observer_epoch": round(0.92 * epochs, 4)}  # fmt: skip


def teacher_labelled_train(out: Path) -> Path:
    """``data/train_teacher_labelled.jsonl``: the 4,000 training rows, then every other text of
    the training pool (never a validation text) labelled by the real-results teacher."""
    from pipelines.results.run import SIZES
    from pipelines.results.settings import TEACHER_STUB, zoo_root
    from sparse_transfer.embedded.movie_reviews import make_splits
    from sparse_transfer.tasks.teacher_labels import label_with_teacher

    target = out / "data" / "train_teacher_labelled.jsonl"
    if target.is_file():
        return target
    size, pool = SIZES["full"], out / "data-pool"
    make_splits(pool, validation_size=size["validation_size"], train_size=size["train_size"])
    if (pool / "train.jsonl").read_bytes() != (out / "data" / "train.jsonl").read_bytes():
        raise ValueError(f"{pool}: the training pool does not reproduce data/train.jsonl")
    texts = [
        json.loads(line)["text"] for line in (pool / "upstream.jsonl").read_text().splitlines()
    ]
    pool_file = pool / "pool_sentences.jsonl"
    pool_file.write_text("".join(json.dumps({"sentence": t}) + "\n" for t in texts))
    label_with_teacher(TEACHER_STUB, str(pool_file), target,
                       train_file=str(out / "data" / "train.jsonl"),
                       validation_files=(str(out / "data" / "validation.jsonl"),),
                       max_seq_length=PARAMS["max_seq_length"], zoo=zoo_root(out))  # fmt: skip
    return target


def run(
    out: Path, upstream: str, name: str, epochs: float | None = None, teacher_labels: bool = False
) -> dict[str, Any]:
    """Transfers from `upstream` (once: published under its own stub) and scores it; compares
    it row by row with the real-results model when that is published.

    `epochs` rescales the recipe (`recipe_args`); `teacher_labels` trains on
    `teacher_labelled_train` instead of the 4,000 labelled rows.
    """
    from pipelines.results.run import SIZES, transfer_from
    from pipelines.results.settings import SPARSE_STUB, zoo_root

    out = out.resolve()
    root = zoo_root(out)
    overrides: dict[str, Any] = {}
    if epochs is not None:
        overrides["recipe_args"] = json.dumps(recipe_args(epochs))
    if teacher_labels:
        overrides["train_file"] = str(teacher_labelled_train(out))
    deployment = published(transfer_stub(name), root)  # a rerun only scores again
    if deployment is None:
        transfer = transfer_from(out, SIZES["full"], overrides)
        deployment = Path(transfer(upstream, transfer_stub(name)))
    mine = score(deployment, out)
    result = {
        "upstream": upstream_facts(upstream, root),
        "transfer_stub": transfer_stub(name),
        "transfer_overrides": overrides,
        "accuracy": {ds: round(100 * float(r.mean()), 2) for ds, r in mine.items()},
    }
    baseline = published(SPARSE_STUB, root)
    if baseline is not None:
        result["paired_vs_published"] = compare(score(baseline, out), mine)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path("real-results-output"))
    parser.add_argument("--upstream", required=True, help="zoo stub of the upstream")
    parser.add_argument("--name", required=True, help="tag of the transfer's stub")
    parser.add_argument("--json", type=Path, required=True, help="where the result goes")
    parser.add_argument("--epochs", type=float, default=None, help="rescale the recipe")
    parser.add_argument(
        "--teacher-labels",
        action="store_true",
        help="train on the training rows plus the pool's other texts labelled by the teacher",
    )
    args = parser.parse_args(argv)
    result = run(args.out, args.upstream, args.name, args.epochs, args.teacher_labels)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
