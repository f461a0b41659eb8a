"""Step: prune the dense model on the corpus with an upstream recipe (resumes when interrupted)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def prune_upstream(
    model: Input[Model],
    corpus: Input[Dataset],
    sparse_model: Output[Model],
    recipe: str = "gmp_pruned90",
    recipe_args: str = "",
    batch_size: int = 32,
    max_length: int = 64,
    seed: int = 0,
    save_steps: int = 200,
    checkpoint_uri: str = "",
    num_nodes: int = 1,
    nproc_per_node: int = 1,
    accelerator_type: str = "",
    accelerator_limit: str = "0",
):
    """MLM loss (where a head exists) + hidden-state distillation under the recipe.

    `checkpoint_uri` (a folder or s3:// prefix that outlives the pod): checkpoints go there
    every `save_steps`, and a retried or re-run step resumes from the newest.
    """
    from sparse_transfer.pipeline.upstream_steps import prune_step
    from sparse_transfer.scaleout.plan import ScaleOut

    scale = ScaleOut(num_nodes, nproc_per_node, accelerator_type, int(accelerator_limit or 0))
    facts = prune_step(
        model.path, corpus.path, sparse_model.path, recipe=recipe, recipe_args=recipe_args,
        batch_size=batch_size, max_length=max_length, seed=seed, save_steps=save_steps,
        checkpoint_uri=checkpoint_uri, scale=scale,
    )  # fmt: skip
    sparse_model.metadata.update({k: v for k, v in facts.items() if k != "recipe_args"})
