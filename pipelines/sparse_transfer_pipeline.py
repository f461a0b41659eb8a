"""The sparse transfer pipeline: the reference's command line as a Kubeflow DAG.

    fetch data ─┬─ fetch student ──────────────────────────┐
                ├─ teacher: fetch stub | train dense (none) ─┼─ teacher labels ─ sparse transfer ─ evaluate (torch)
                │                      └─ evaluate teacher ──┤            └─ export ONNX ─ evaluate (ONNX)
                └────────────────────────────────────────────┴──────────── publish if the gate passes

"teacher labels" passes the data through unless ``advanced.unlabeled_file`` is set; then the
teacher labels that text and the sparse transfer trains on it too (`pipeline.label_step`).

Before anything is fetched, "check training flags" checks the flags, the recipe's windows and
the data files' first rows against the task (`sparse_transfer.pipeline.options.configure_run`).

Parameters are the reference command lines' flags with the reference's SST2
defaults (``sparseml.transformers.text_classification ... --task_name sst2
--max_seq_length 128 --per_device_train_batch_size 32 ... --fp16``), plus the
teacher, data snapshot, gate, zoo and accelerator settings. The run form shows the
choices a person makes per run; the rarely changed flags travel in ``trainer_flags``
(checked by the flag schema) and the rarely changed step settings in ``advanced``
(`sparse_transfer.pipeline.settings`), both checked in the first step.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Markdown, PipelineTask

from components import deploy_serving as serve_with_kserve
from components import (
    evaluate,
    export_onnx,
    fetch_model,
    publish,
    sparse_transfer,
    teacher,
    teacher_label,
)
from pipelines._docs import described
from pipelines._opening import data_and_training_flags
from pipelines._settings import io_step, resources, scale_out, training_step, with_s3
from sparse_transfer.pipeline.settings import RunSettings, settings_help

OBERT_PRUNED90 = "zoo:nlp/masked_language_modeling/obert-base/pytorch/huggingface/wikipedia_bookcorpus/pruned90-none"
OBERT_DENSE = (
    "zoo:nlp/masked_language_modeling/obert-base/pytorch/huggingface/wikipedia_bookcorpus/base-none"
)
SST2_RECIPE = "zoo:nlp/sentiment_analysis/obert-base/pytorch/huggingface/sst2/pruned90_quant-none"
SST2_TEACHER = "zoo:nlp/sentiment_analysis/obert-base/pytorch/huggingface/sst2/base-none"


# What a run hands back: the report, the gate decision and the stub published to ("" if none).
class PipelineOutputs(NamedTuple):
    report: Markdown
    passed: bool
    published: str


def _teacher_step(p: dict, data: PipelineTask, config: PipelineTask) -> PipelineTask:
    """Fetches the teacher or trains a dense one.

    One parameter-driven step rather than dsl.If/dsl.Else + dsl.OneOf: kfp 2.17.3's
    local runner cannot select an artifact from conditional branches. Its seed and recipe
    overrides come from the run's ``advanced`` object (``teacher_seed``, ``teacher_recipe_args``).
    """
    return training_step(
        teacher(
            task=p["task"],
            dataset=data.outputs["dataset"],
            training_args=config.output,
            distill_teacher=p["distill_teacher"],
            base_model=p["teacher_model_name_or_path"],
            recipe=p["teacher_recipe"],
            seed=RunSettings.teacher_seed,
            zoo_root=p["zoo_root"],
            advanced=p["advanced"],
        ),
        p["accelerator_type"],
        p["accelerator_limit"],
    ).set_display_name("teacher: fetch or train dense")


def _teacher_labels(p: dict, teacher_model, data: PipelineTask, config: PipelineTask):
    """The Dataset the sparse transfer trains on (``advanced.unlabeled_file`` teacher-labelled).

    Never cached: the unlabelled file, like the fetched data, may change behind its URI.
    """
    step = teacher_label(
        dataset=data.outputs["dataset"],
        teacher=teacher_model,
        training_args=config.output,
        advanced=p["advanced"],
    )
    return with_s3(resources(step, "eval").set_caching_options(False)).set_display_name(
        "teacher labels"
    )


def _sparse_transfer(
    p: dict, student: PipelineTask, teacher_model, labelled: PipelineTask, config: PipelineTask
) -> PipelineTask:
    """The sparse transfer training step (scale-out settings from the run's ``advanced``)."""
    return training_step(
        sparse_transfer(
            task=p["task"],
            model=student.outputs["model"],
            teacher=teacher_model,
            dataset=labelled.outputs["labelled"],
            recipe=p["recipe"],
            recipe_args=p["recipe_args"],
            training_args=config.output,
            zoo_root=p["zoo_root"],
            **scale_out(p["accelerator_type"], p["accelerator_limit"], advanced=p["advanced"]),
        ),
        p["accelerator_type"],
        p["accelerator_limit"],
    ).set_display_name("sparse transfer")


def _evaluate(task, model, data: PipelineTask, config: PipelineTask, name: str) -> PipelineTask:
    """One evaluation step of `model` on the run's validation data."""
    step = evaluate(
        task=task, model=model, dataset=data.outputs["dataset"], training_args=config.output
    )
    return resources(step, "eval").set_display_name(name)


def _gate_and_serve(
    p: dict, sparse: PipelineTask, teacher_eval: PipelineTask, data: PipelineTask,
    config: PipelineTask,
) -> PipelineTask:  # fmt: skip
    """Evaluates the sparse model (PyTorch, ONNX), exports it, gates, publishes and serves."""
    task, model = p["task"], sparse.outputs["sparse_model"]
    torch_eval = _evaluate(task, model, data, config, "evaluate (PyTorch)")
    exported = resources(
        export_onnx(task=task, model=model, sequence_length=p["max_seq_length"]), "eval"
    ).set_display_name("export ONNX")
    onnx_eval = _evaluate(task, exported.outputs["deployment"], data, config, "evaluate (ONNX)")
    gate = io_step(
        publish(
            task=task,
            model=model,
            deployment=exported.outputs["deployment"],
            torch_metrics=torch_eval.outputs["metrics"],
            onnx_metrics=onnx_eval.outputs["metrics"],
            teacher_metrics=teacher_eval.outputs["metrics"],
            export_metrics=exported.outputs["metrics"],
            publish_stub=p["publish_stub"],
            zoo_root=p["zoo_root"],
            gate_metric=p["gate_metric"],
            min_metric=p["min_metric"],
            max_drop_vs_teacher=p["max_drop_vs_teacher"],
            advanced=p["advanced"],
        )
    ).set_display_name("gate and publish")
    # Parameter-driven like the teacher step (no dsl.If: kfp's local runner runs it too).
    io_step(
        serve_with_kserve(
            enabled=p["deploy_serving"],
            task=task,
            published=gate.outputs["published"],
            zoo_root=p["zoo_root"],
            advanced=p["advanced"],
        )
    ).set_display_name("serve with KServe")
    return gate


@dsl.pipeline(
    name="sparse-transfer",
    description="Fine-tune a pre-sparsified transformer keeping its sparsity (QAT + distillation), "
    "export int8 ONNX and publish it to the zoo when it passes the quality gate.",
)
@described(advanced=settings_help("sparse_transfer"))
def sparse_transfer_pipeline(
    task: str = "text-classification",
    model_name_or_path: str = OBERT_PRUNED90,
    recipe: str = SST2_RECIPE,
    recipe_args: str = "",
    distill_teacher: str = SST2_TEACHER,
    teacher_model_name_or_path: str = OBERT_DENSE,
    teacher_recipe: str = SST2_TEACHER,
    task_name: str = "sst2",
    dataset_name: str = "",
    train_file: str = "",
    validation_file: str = "",
    max_seq_length: int = 0,
    per_device_train_batch_size: int = 32,
    gate_metric: str = "",
    min_metric: float = 0.0,
    max_drop_vs_teacher: float = 2.0,
    publish_stub: str = "",
    zoo_root: str = "",
    accelerator_type: str = "",
    accelerator_limit: str = "0",
    deploy_serving: bool = False,
    trainer_flags: dict = {},  # noqa: B006 (KFP reads the literal default; never mutated)
    advanced: dict = {},  # noqa: B006 (KFP reads the literal default; never mutated)
) -> PipelineOutputs:
    """Sparse transfer end to end.

    Every parameter is described on the run form (pipelines/_docs.py `described`: the
    PARAMETER_HELP table, the flag schema's help and the settings of ``advanced``).
    """
    p = dict(locals())  # the run's parameters, for the graph-building helpers below
    data, config = data_and_training_flags(p, "sparse_transfer")
    student = (
        io_step(fetch_model(ref=model_name_or_path, kind="model", task=task, zoo_root=zoo_root))
        .after(config)
        .set_display_name("fetch student")
    )  # nothing is fetched before the checks pass
    teacher_model = _teacher_step(p, data, config).outputs["teacher"]
    teacher_eval = _evaluate(task, teacher_model, data, config, "evaluate teacher")
    labelled = _teacher_labels(p, teacher_model, data, config)
    sparse = _sparse_transfer(p, student, teacher_model, labelled, config)
    gate = _gate_and_serve(p, sparse, teacher_eval, data, config)
    return PipelineOutputs(
        report=gate.outputs["report"],
        passed=gate.outputs["passed"],
        published=gate.outputs["published"],
    )
