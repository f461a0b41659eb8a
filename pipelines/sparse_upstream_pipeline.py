"""The sparse upstream pipeline: a dense encoder pruned on unlabelled text, measured, published.

    fetch dense model ─┬──────────────────────────────┬─ evaluate (MLM, cosine, probe) ─ card + publish
    fetch corpus ──────┴─ prune (recipe; resumes) ────┘

Defaults build the embedded zoo's MiniLM upstream on the general English corpus with the
built-in 90% GMP recipe; ``recipe`` picks another built-in (``gmp_block4_pruned90``,
``gmp_block16x4_pruned90``, ``obs_pruned90``, ``obs_block4_pruned90``, ``gmp_2of4``) or a
recipe file. `zoo seed`
runs these same stages in one process (`sparse_transfer.embedded.upstream_build`).
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Markdown

from components import (
    evaluate_upstream,
    fetch_corpus,
    fetch_model,
    prune_upstream,
    publish_upstream,
)
from pipelines._docs import described
from pipelines._settings import io_step, resources, training_step

MINILM_DENSE = "zoo:nlp/masked_language_modeling/minilm-l6/pytorch/huggingface/general/base-none"


# The run form's descriptions of this pipeline's parameters (the rest: pipelines/_docs.py).
UPSTREAM_HELP = {
    "model_name_or_path": "Dense model: zoo stub, s3:// URI, local folder or hub id.",
    "corpus": "general, movie_reviews (the in-domain experiment) or comma-separated "
    ".txt/.jsonl files, folders or s3:// prefixes.",
    "train_samples": "Sentences to prune on (0: all).",
    "eval_samples": "Sentences held out for the evaluation.",
    "recipe": "A built-in upstream recipe (gmp_pruned90, gmp_block4_pruned90, "
    "gmp_block16x4_pruned90, obs_pruned90, obs_block4_pruned90, gmp_2of4) or a recipe file.",
    "recipe_args": "The recipe's variables (JSON object); empty: none.",
    "batch_size": "Sentences per training batch.",
    "max_length": "Tokens per sentence after tokenisation.",
    "seed": "Seed of sampling and training.",
    "save_steps": "Checkpoint every N steps (to checkpoint_uri).",
    "checkpoint_uri": "Folder or s3:// prefix that outlives the pod; a re-run with the same "
    "URI resumes from the newest checkpoint (empty: no checkpoints).",
    "probe": "Labelled set of the transfer probe (empty: none).",
    "min_cosine": "Publish only when the embedding cosine to the dense model reaches it "
    "(negative: off).",
    "accelerator_type": "GPU resource for the pruning step, e.g. nvidia.com/gpu; empty: CPU.",
    "num_nodes": "Must be 1: one node prunes an encoder.",
    "nproc_per_node": "Processes in the pruning pod (above 1: torchrun; one per GPU).",
}


class UpstreamOutputs(NamedTuple):
    report: Markdown
    passed: bool
    published: str


@dsl.pipeline(
    name="sparse-upstream",
    description="Prune a dense encoder on a text corpus (GMP or oBS; unstructured, block4 or "
    "N:M; MLM loss + hidden-state distillation), evaluate it against the dense model and "
    "publish it to the zoo with a card.",
)
@described(**UPSTREAM_HELP)
def sparse_upstream_pipeline(
    model_name_or_path: str = MINILM_DENSE,
    corpus: str = "general",
    train_samples: int = 0,
    eval_samples: int = 256,
    recipe: str = "gmp_pruned90",
    recipe_args: str = "",
    batch_size: int = 32,
    max_length: int = 64,
    seed: int = 0,
    save_steps: int = 200,
    checkpoint_uri: str = "",
    probe: str = "movie_reviews",
    zoo_root: str = "",
    publish_stub: str = "",
    publish_force: bool = False,
    min_cosine: float = -1.0,
    accelerator_type: str = "",
    accelerator_limit: str = "0",
    num_nodes: int = 1,
    nproc_per_node: int = 1,
) -> UpstreamOutputs:
    """Sparse upstream end to end (the run form's descriptions: UPSTREAM_HELP)."""
    dense = io_step(
        fetch_model(
            ref=model_name_or_path, kind="model", task="masked-language-modeling", zoo_root=zoo_root
        )
    ).set_display_name("fetch dense model")
    text = io_step(
        fetch_corpus(corpus=corpus, train_samples=train_samples, eval_samples=eval_samples)
    ).set_display_name("fetch corpus")
    pruned = training_step(
        prune_upstream(
            model=dense.outputs["model"], corpus=text.outputs["dataset"], recipe=recipe,
            recipe_args=recipe_args, batch_size=batch_size, max_length=max_length, seed=seed,
            save_steps=save_steps, checkpoint_uri=checkpoint_uri, num_nodes=num_nodes,
            nproc_per_node=nproc_per_node, accelerator_type=accelerator_type,
            accelerator_limit=accelerator_limit,
        ),
        accelerator_type,
        accelerator_limit,
    ).set_display_name("prune (resumes from its last checkpoint)")  # fmt: skip
    quality = resources(
        evaluate_upstream(
            sparse_model=pruned.outputs["sparse_model"], dense_model=dense.outputs["model"],
            corpus=text.outputs["dataset"], probe=probe,
        ),
        "eval",
    ).set_display_name("evaluate upstream")  # fmt: skip
    card = io_step(
        publish_upstream(
            sparse_model=pruned.outputs["sparse_model"], metrics=quality.outputs["metrics"],
            corpus_facts=text.outputs["Output"], publish_stub=publish_stub,
            parent=model_name_or_path, zoo_root=zoo_root, force=publish_force, min_cosine=min_cosine,
        )
    ).set_display_name("card and publish")  # fmt: skip
    return UpstreamOutputs(
        report=card.outputs["report"],
        passed=card.outputs["passed"],
        published=card.outputs["published"],
    )
