"""The sparse upstream pipeline's steps (components/*_upstream.py call one each).

Paths in, JSON-able dicts out, as in `steps`. The stages themselves live in
`sparse_transfer.embedded.upstream_build`, which `zoo seed` runs in one process.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from sparse_transfer.errors import PipelineError
from sparse_transfer.scaleout.plan import ScaleOut


def corpus_step(
    source: str, dest: str | Path, *, train_samples: int = 0, eval_samples: int = 256
) -> dict[str, Any]:
    """Reads the corpus (named, files, folders, s3:// prefixes) into train/eval files."""
    from sparse_transfer.embedded.upstream_build import write_corpus

    if eval_samples < 1 or train_samples < 0:
        raise PipelineError(
            f"corpus: eval_samples must be >= 1 and train_samples >= 0, got {eval_samples}, {train_samples}"
        )
    return write_corpus(source, Path(dest), train_samples=train_samples, eval_samples=eval_samples)


def _settings(recipe: str, recipe_args: str, **kw: Any):
    from sparse_transfer.embedded.upstream import PruneSettings
    from sparse_transfer.recipe import parse_recipe_args

    return PruneSettings(recipe=recipe, recipe_args=parse_recipe_args(recipe_args) or {}, **kw)


def prune_step(
    model_dir: str | Path,
    corpus_dir: str | Path,
    out_dir: str | Path,
    *,
    recipe: str,
    recipe_args: str = "",
    batch_size: int = 32,
    max_length: int = 64,
    seed: int = 0,
    save_steps: int = 200,
    checkpoint_uri: str = "",
    scale: ScaleOut | None = None,
) -> dict[str, Any]:
    """Prunes the dense model; resumes from `checkpoint_uri`'s newest checkpoint if any.

    `scale.nproc_per_node` > 1 runs the same command under torchrun in this pod (DDP);
    several nodes are not supported for upstream pruning (one node of 8 GPUs prunes
    BERT-base in hours).
    """
    scale = scale or ScaleOut()
    if scale.num_nodes > 1:
        raise PipelineError(
            f"num_nodes={scale.num_nodes}: upstream pruning runs on one node; use nproc_per_node"
        )
    kwargs = {
        "recipe": recipe, "recipe_args": recipe_args, "batch_size": batch_size,
        "max_length": max_length, "seed": seed, "save_steps": save_steps,
        "checkpoint_dir": checkpoint_uri, "use_cpu": not scale.accelerator_limit,
    }  # fmt: skip
    if scale.nproc_per_node > 1:
        _torchrun(scale.nproc_per_node, prune_argv(model_dir, corpus_dir, out_dir, **kwargs))
        return json.loads((Path(out_dir) / "facts.json").read_text())
    return prune_local(model_dir, corpus_dir, out_dir, **kwargs)


def prune_argv(model_dir, corpus_dir, out_dir, **kw: Any) -> list[str]:
    """``sparse-transfer upstream prune`` arguments for the same run (torchrun's processes)."""
    return [
        str(model_dir), "--corpus_dir", str(corpus_dir), "--output_dir", str(out_dir),
        "--recipe", kw["recipe"], "--recipe_args", kw["recipe_args"] or "{}",
        "--batch_size", str(kw["batch_size"]), "--max_length", str(kw["max_length"]),
        "--seed", str(kw["seed"]), "--save_steps", str(kw["save_steps"]),
        "--checkpoint_dir", kw["checkpoint_dir"], *([] if kw["use_cpu"] else ["--gpu"]),
    ]  # fmt: skip


def prune_local(
    model_dir: str | Path,
    corpus_dir: str | Path,
    out_dir: str | Path,
    *,
    recipe: str,
    recipe_args: str,
    batch_size: int,
    max_length: int,
    seed: int,
    save_steps: int,
    checkpoint_dir: str,
    use_cpu: bool,
) -> dict[str, Any]:
    """One process (or one torchrun rank) of upstream pruning."""
    from sparse_transfer.embedded.upstream_build import prune_stage

    settings = _settings(
        recipe, recipe_args, batch_size=batch_size, max_length=max_length, seed=seed,
        save_steps=save_steps, use_cpu=use_cpu,
    )  # fmt: skip
    return prune_stage(
        Path(model_dir), Path(corpus_dir), Path(out_dir), settings,
        checkpoint_dir=checkpoint_dir or None,
    )  # fmt: skip


def _torchrun(nproc: int, argv: list[str]) -> None:
    import subprocess

    from sparse_transfer.scaleout.torchrun import free_port

    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
        "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), "-m", "sparse_transfer", "upstream", "prune", *argv,
    ]  # fmt: skip
    if subprocess.run(command, check=False).returncode != 0:  # noqa: S603
        raise PipelineError(f"upstream pruning under torchrun ({nproc} processes) failed")


def evaluate_step(
    sparse_dir: str | Path, dense_dir: str | Path, corpus_dir: str | Path, *, probe: str = ""
) -> dict[str, Any]:
    from sparse_transfer.embedded.upstream_build import evaluate_stage

    return evaluate_stage(Path(sparse_dir), Path(dense_dir), Path(corpus_dir), probe)


def publish_step(
    sparse_dir: str | Path,
    corpus: dict[str, Any],
    metrics: dict[str, Any],
    *,
    stub: str,
    parent: str,
    zoo: str = "",
    force: bool = False,
    min_cosine: float = -1.0,
    command: str = "sparse-transfer pipeline run (sparse_upstream)",
) -> dict[str, Any]:
    """Writes the card; publishes to `stub` when given and the cosine floor holds.

    Returns ``{"report": markdown card, "published": stub or "", "passed": bool}``.
    """
    import tempfile

    from sparse_transfer.embedded import upstream_build
    from sparse_transfer.zoo import push

    sparse_dir = Path(sparse_dir)
    facts = json.loads((sparse_dir / upstream_build.FACTS).read_text())
    meta = upstream_build.card_meta(
        facts, metrics, corpus, parent=parent, base_model=parent, command=command
    )
    passed = min_cosine < 0 or metrics["eval_cosine_to_dense"] >= min_cosine
    with tempfile.TemporaryDirectory() as tmp:
        entry = upstream_build.write_entry(
            sparse_dir, Path(tmp) / "entry", meta, stub or "sparse upstream"
        )
        report = (entry / "model.md").read_text()
        if stub and passed:
            push(
                entry,
                stub,
                force=force,
                parent=parent if parent.startswith("zoo:") else None,
                root=zoo or None,
            )
        shutil.rmtree(entry, ignore_errors=True)
    gate = (
        ""
        if min_cosine < 0
        else f"\n\nGate: cosine to dense >= {min_cosine}: {'passed' if passed else 'BLOCKED'}\n"
    )
    return {"report": report + gate, "published": stub if stub and passed else "", "passed": passed}
