"""The run form: a description for every pipeline parameter.

KFP shows each parameter's description on the UI's "Create run" form, and takes it from the
pipeline function's docstring ``Args:`` (kfp/dsl/component_factory.py
``extract_component_interface``: ``docstring_parser`` + ``assign_descriptions``). `described`
writes that section before ``@dsl.pipeline`` reads it: a description the function's own
docstring gives wins, then the decorator's own (the ``advanced`` settings of that pipeline),
then `PARAMETER_HELP`, then the flag schema's help
(`sparse_transfer.tasks.flags`, the same text as ``--help``), then a step setting's
(`sparse_transfer.pipeline.settings`, for pipelines that keep one as a parameter). A parameter with none of these
fails at import, so a new parameter cannot reach the form undescribed.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable

import docstring_parser

from sparse_transfer.pipeline.settings import SETTINGS
from sparse_transfer.tasks.flags import FLAGS

PARAMETER_HELP = {
    "trainer_flags": "JSON object of the rarely changed data/training flags, e.g. "
    '{"fp16": false, "max_steps": 100, "seed": 7, "dataset_snapshot_prefix": "s3://..."}; '
    "keys: the flags of sparse_transfer.tasks.flags (doc_stride, evaluation_strategy, "
    "save_strategy, max_train_samples, ...). Checked at the first step: an unknown key or a "
    "bad value fails the run with one line; empty: the reference defaults.",
    "task": "text-classification, token-classification or question-answering.",
    "model_name_or_path": "The pre-sparsified model to fine-tune: zoo stub, s3:// URI, "
    "local path or hub id.",
    "recipe": "Sparse transfer recipe (modifier YAML): zoo stub, s3:// URI, path or built-in "
    "name. It keeps the sparsity and adds QAT.",
    "recipe_args": "JSON object overriding the recipe's variables, e.g. "
    '{"num_epochs": 3}; empty: none.',
    "distill_teacher": "Teacher for distillation: stub, URI or path; empty trains a dense "
    "teacher in the run from teacher_model_name_or_path; 'disable' turns distillation off.",
    "teacher_model_name_or_path": "Dense base model for the teacher trained when "
    "distill_teacher is empty.",
    "teacher_recipe": "Recipe for that dense teacher.",
    "zoo_root": "Zoo root (s3://bucket/prefix) for stubs read and published; empty: the "
    "cluster's (SPARSE_TRANSFER_ZOO from the chart's settings ConfigMap).",
    "publish_stub": "Zoo stub to publish the result to; empty: gate and report only.",
    "gate_metric": "Metric the gate judges: any metric the evaluation reports (macro_f1, "
    "f1_<label>, ...); empty: the task's headline metric. Checked against the task at the "
    "first step.",
    "min_metric": "Gate: lowest acceptable value of the gate metric, in its units (negative: off).",
    "max_drop_vs_teacher": "Gate: allowed drop below the teacher, in points (negative: off).",
    "accelerator_type": "GPU resource for the training steps, e.g. nvidia.com/gpu; empty: "
    "CPU only.",
    "accelerator_limit": 'GPUs per training pod, as a string ("0": none); KFP\'s driver '
    "reads resource placeholders as strings.",
    "deploy_serving": "After a publish, create or update a KServe InferenceService for the "
    "published stub (needs KServe in the cluster; docs/serving.md).",
}


def _help(name: str, own: dict[str, str], given: dict[str, str]) -> str:
    if own.get(name):
        return own[name]
    if name in given:
        return given[name]
    if name in PARAMETER_HELP:
        return PARAMETER_HELP[name]
    if name in FLAGS:
        return FLAGS[name].help
    if name in SETTINGS:
        return SETTINGS[name].help
    raise ValueError(f"pipeline parameter '{name}' has no description: add it to "
                     "pipelines/_docs.py PARAMETER_HELP or the function's docstring")  # fmt: skip


def described(func: Callable | None = None, /, **given: str) -> Callable:
    """Rewrites `func`'s docstring with one ``Args:`` entry per parameter (see the module).

    Used bare (``@described``) or with per-pipeline descriptions that come after the
    docstring's own (``@described(advanced=settings_help("dense_teacher"))``).
    """
    if func is None:
        return lambda f: described(f, **given)
    parsed = docstring_parser.parse(inspect.getdoc(func) or "")
    own = {p.arg_name: " ".join((p.description or "").split()) for p in parsed.params}
    lines = []
    for name in inspect.signature(func).parameters:
        text = " ".join(_help(name, own, given).split())
        lines.append(textwrap.fill(f"{name}: {text}", width=96, initial_indent="    ",
                                   subsequent_indent="        "))  # fmt: skip
    summary = "\n\n".join(p for p in (parsed.short_description, parsed.long_description) if p)
    func.__doc__ = f"{summary}\n\nArgs:\n" + "\n".join(lines) + "\n"
    return func
