"""The sparse transfer pipeline: the reference's command line as a Kubeflow DAG.

    fetch data ─┬─ fetch student ──────────────────────────┐
                ├─ teacher: fetch stub | train dense (none) ─┼─ sparse transfer ─ evaluate (torch)
                │                      └─ evaluate teacher ──┤        └─ export ONNX ─ evaluate (ONNX)
                └────────────────────────────────────────────┴──────────── publish if the gate passes

Before anything is fetched, "check training flags" checks the flags, the recipe's windows and
the data files' first rows against the task (`sparse_transfer.pipeline.options.configure_run`).

Parameters are the reference command lines' flags with the reference's SST2
defaults (``sparseml.transformers.text_classification ... --task_name sst2
--max_seq_length 128 --per_device_train_batch_size 32 ... --fp16``), plus the
teacher, data snapshot, gate, zoo and accelerator settings.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Markdown

from components import deploy_serving as serve_with_kserve
from components import evaluate, export_onnx, fetch_model, publish, sparse_transfer, teacher
from pipelines._docs import described
from pipelines._opening import data_and_training_flags
from pipelines._settings import io_step, resources, scale_out, training_step

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


@dsl.pipeline(
    name="sparse-transfer",
    description="Fine-tune a pre-sparsified transformer keeping its sparsity (QAT + distillation), "
    "export int8 ONNX and publish it to the zoo when it passes the quality gate.",
)
@described
def sparse_transfer_pipeline(
    task: str = "text-classification",
    model_name_or_path: str = OBERT_PRUNED90,
    recipe: str = SST2_RECIPE,
    recipe_args: str = "",
    distill_teacher: str = SST2_TEACHER,
    teacher_model_name_or_path: str = OBERT_DENSE,
    teacher_recipe: str = SST2_TEACHER,
    teacher_recipe_args: str = "",
    teacher_seed: int = 20811,
    task_name: str = "sst2",
    dataset_name: str = "",
    dataset_config_name: str = "",
    train_file: str = "",
    validation_file: str = "",
    dataset_snapshot_prefix: str = "",
    input_column_names: str = "",
    label_column_name: str = "",
    validation_ratio: float = 0.0,
    max_seq_length: int = 0,
    doc_stride: int = 0,
    preprocessing_num_workers: int = 6,
    per_device_train_batch_size: int = 32,
    per_device_eval_batch_size: int = 32,
    gradient_accumulation_steps: int = 1,
    fp16: bool = True,
    seed: int = 42,
    evaluation_strategy: str = "epoch",
    eval_steps: int = 0,
    logging_steps: int = 500,
    logging_first_step: bool = False,
    save_strategy: str = "epoch",
    save_steps: int = 500,
    save_total_limit: int = 1,
    max_steps: int = -1,
    max_train_samples: int = 0,
    max_eval_samples: int = 0,
    zoo_root: str = "",
    publish_stub: str = "",
    publish_force: bool = False,
    gate_metric: str = "",
    min_metric: float = 0.0,
    max_drop_vs_teacher: float = 2.0,
    must_beat_published: bool = False,
    gate_require_int8: bool = False,
    allow_inert_modifiers: bool = False,
    accelerator_type: str = "",
    accelerator_limit: str = "0",
    node_accelerator_limit: str = "",
    deploy_serving: bool = False,
    serving_max_replicas: int = 1,
    num_nodes: int = 1,
    nproc_per_node: int = 1,
) -> PipelineOutputs:
    """Sparse transfer end to end.

    Every parameter is described on the run form (pipelines/_docs.py `described`: the
    entries below, PARAMETER_HELP, then the flag schema's help).

    Args:
        distill_teacher: teacher stub/URI/path; empty trains a dense teacher from
            `teacher_model_name_or_path` with `teacher_recipe`; ``disable`` turns
            distillation off.
        dataset_snapshot_prefix: read the newest snapshot folder under this prefix
            instead of `train_file`/`validation_file` (scheduled retraining).
        max_steps, eval_steps, max_*_samples: -1/0 mean unset (the recipe's epochs rule).
        publish_stub: zoo stub to publish to (empty: gate and report only).
        min_metric: gate floor in the metric's units (negative: off).
        max_drop_vs_teacher: gate, allowed drop below the teacher in points (negative: off).
        must_beat_published: publish only if better than the model now at `publish_stub`.
        gate_metric: any metric the evaluation reports (``macro_f1``, ``f1_<label>``...);
            empty: the task's headline metric. Checked against the task at configure time.
        gate_require_int8: publish only an int8 deployment.
        allow_inert_modifiers: run although a recipe modifier starts after training ends.
        max_seq_length / doc_stride: 0 = the task's default (128; 384 and 128 for QA).
        accelerator_type / accelerator_limit: GPU for the training steps, e.g.
            ``nvidia.com/gpu`` and ``"1"``; empty/"0" for CPU only. The count is a string
            because KFP's driver resolves runtime resource placeholders as strings.
        deploy_serving: after a publish, create or update a KServe InferenceService
            serving the published stub (needs KServe in the cluster; docs/serving.md).
        num_nodes / nproc_per_node: data-parallel training (DDP): processes per pod
            (torchrun inside the step) and pods (a Kubeflow Trainer v2 TrainJob;
            the chart's ``trainjob.rbac`` must be on). See docs/distributed.md.
    """
    data, config = data_and_training_flags(locals())
    # nothing is fetched before the checks (flags, recipe, the data's first rows) pass
    student = (
        io_step(fetch_model(ref=model_name_or_path, kind="model", task=task, zoo_root=zoo_root))
        .after(config)
        .set_display_name("fetch student")
    )

    # One parameter-driven step rather than dsl.If/dsl.Else + dsl.OneOf: kfp 2.17.3's
    # local runner cannot select an artifact from conditional branches.
    teacher_task = training_step(
        teacher(
            task=task,
            dataset=data.outputs["dataset"],
            training_args=config.output,
            distill_teacher=distill_teacher,
            base_model=teacher_model_name_or_path,
            recipe=teacher_recipe,
            recipe_args=teacher_recipe_args,
            seed=teacher_seed,
            zoo_root=zoo_root,
        ),
        accelerator_type,
        accelerator_limit,
    ).set_display_name("teacher: fetch or train dense")
    teacher_model = teacher_task.outputs["teacher"]

    teacher_eval = resources(
        evaluate(
            task=task,
            model=teacher_model,
            dataset=data.outputs["dataset"],
            training_args=config.output,
        ),
        "eval",
    ).set_display_name("evaluate teacher")
    sparse = training_step(
        sparse_transfer(
            task=task,
            model=student.outputs["model"],
            teacher=teacher_model,
            dataset=data.outputs["dataset"],
            recipe=recipe,
            recipe_args=recipe_args,
            training_args=config.output,
            zoo_root=zoo_root,
            **scale_out(
                num_nodes,
                nproc_per_node,
                accelerator_type,
                accelerator_limit,
                node_accelerator_limit,
            ),
        ),
        accelerator_type,
        accelerator_limit,
    ).set_display_name("sparse transfer")
    torch_eval = resources(
        evaluate(
            task=task,
            model=sparse.outputs["sparse_model"],
            dataset=data.outputs["dataset"],
            training_args=config.output,
        ),
        "eval",
    ).set_display_name("evaluate (PyTorch)")
    exported = resources(
        export_onnx(
            task=task, model=sparse.outputs["sparse_model"], sequence_length=max_seq_length
        ),
        "eval",
    ).set_display_name("export ONNX")
    onnx_eval = resources(
        evaluate(
            task=task,
            model=exported.outputs["deployment"],
            dataset=data.outputs["dataset"],
            training_args=config.output,
        ),
        "eval",
    ).set_display_name("evaluate (ONNX)")
    gate = io_step(
        publish(
            task=task,
            model=sparse.outputs["sparse_model"],
            deployment=exported.outputs["deployment"],
            torch_metrics=torch_eval.outputs["metrics"],
            onnx_metrics=onnx_eval.outputs["metrics"],
            teacher_metrics=teacher_eval.outputs["metrics"],
            export_metrics=exported.outputs["metrics"],
            publish_stub=publish_stub,
            zoo_root=zoo_root,
            gate_metric=gate_metric,
            min_metric=min_metric,
            max_drop_vs_teacher=max_drop_vs_teacher,
            must_beat_published=must_beat_published,
            require_int8=gate_require_int8,
            force=publish_force,
        )
    ).set_display_name("gate and publish")
    # Parameter-driven like the teacher step (no dsl.If: kfp's local runner runs it too).
    io_step(
        serve_with_kserve(
            enabled=deploy_serving,
            task=task,
            published=gate.outputs["published"],
            zoo_root=zoo_root,
            max_replicas=serving_max_replicas,
        )
    ).set_display_name("serve with KServe")
    return PipelineOutputs(
        report=gate.outputs["report"],
        passed=gate.outputs["passed"],
        published=gate.outputs["published"],
    )
