"""The whole sparse_transfer_pipeline on kfp's local runner (SubprocessRunner), zoo on loopback S3.

Two runs cover both teacher paths and both gate outcomes:

* no teacher stub: the pipeline trains the dense teacher, which labels unlabelled text from
  S3 (``unlabeled_file``) for the sparse transfer; the gate passes, and the sparse int8
  deployment is published to the zoo in the S3 bucket;
* a teacher stub from the zoo, data from the newest S3 snapshot, and
  "must beat the published model" against an entry scoring 1.0: the gate
  blocks and the zoo entry is left untouched.

Tiny models (hidden 32, 2 layers), 32 training rows and one epoch keep each run
short; most of its time is the ten step subprocesses importing torch.
"""

import json
from pathlib import Path

import pytest

from sparse_transfer import storage
from sparse_transfer import zoo as zoo_api
from sparse_transfer.embedded.fixtures import make_tiny_bert, sentiment_rows, write_jsonl
from sparse_transfer.recipe import builtin_recipe_path

pytestmark = pytest.mark.integration

STUB = "zoo:nlp/sentiment_analysis/tiny-bert/pytorch/huggingface/sst2/pruned90_quant-itest"
TEACHER_STUB = "zoo:nlp/sentiment_analysis/tiny-bert/pytorch/huggingface/sst2/base-itest"
QUICK = {
    "task": "text-classification",
    "recipe": str(builtin_recipe_path("sst2_pruned90_quant")),
    "recipe_args": '{"num_epochs": 1, "init_lr": 0.005, "qat_start_epoch": 0.5, "observer_epoch": 0.75}',
    "teacher_recipe": str(builtin_recipe_path("dense_teacher")),
    "teacher_recipe_args": '{"num_epochs": 1, "init_lr": 0.005}',
    "task_name": "sst2",
    "max_seq_length": 16,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 16,
    "preprocessing_num_workers": 0,
    "fp16": False,
    "evaluation_strategy": "no",
    "save_strategy": "no",
}


@pytest.fixture
def models(tmp_path):
    student = make_tiny_bert(tmp_path / "student", hidden_size=32, sparsity=0.9)
    base = make_tiny_bert(tmp_path / "base", hidden_size=32, seed=1)
    write_jsonl(sentiment_rows(32), tmp_path / "data" / "train.jsonl")
    write_jsonl(sentiment_rows(16, seed=1), tmp_path / "data" / "validation.jsonl")
    return {"student": student, "base": base, "data": tmp_path / "data"}


def run(tmp_path, name: str, **parameters):
    from pipelines.client import run_local

    config = tmp_path / f"{name}.yaml"
    config.write_text(
        f"pipeline: sparse_transfer\nrun_name: {name}\nparameters: {json.dumps(dict(QUICK, **parameters))}\n"
    )
    return run_local(config, pipeline_root=tmp_path / "root")


def step_dir(result, step: str) -> Path:
    (run_dir,) = [
        p for p in result.pipeline_root.iterdir() if p.name.startswith("sparse-transfer-")
    ]
    return run_dir / step


def test_trains_teacher_passes_gate_and_publishes_to_s3_zoo(s3_bucket, models, tmp_path):
    zoo_root = f"s3://{s3_bucket}/zoo"
    import boto3

    pool = "".join(json.dumps({"sentence": r["sentence"]}) + "\n" for r in sentiment_rows(24, 7))
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="pool/unlabeled.jsonl", Body=pool.encode())
    pool_uri = f"s3://{s3_bucket}/pool/unlabeled.jsonl"
    result = run(
        tmp_path, "train-teacher",
        model_name_or_path=str(models["student"]), distill_teacher="",
        teacher_model_name_or_path=str(models["base"]),
        train_file=str(models["data"] / "train.jsonl"), validation_file=str(models["data"] / "validation.jsonl"),
        zoo_root=zoo_root, publish_stub=STUB, min_metric=0.0, max_drop_vs_teacher=100.0,
        unlabeled_file=pool_uri,
    )  # fmt: skip
    assert result.passed is True and result.published == STUB
    # the trained teacher labelled the pool; the sparse transfer trained on all of it
    labelled = json.loads(
        (step_dir(result, "teacher-label") / "labelled" / "data.json").read_text()
    )
    added = labelled["teacher_labels"]["teacher_labelled_rows"]
    assert labelled["unlabeled_file_source"] == pool_uri and 0 < added <= 24
    sparse_summary = json.loads(
        (step_dir(result, "sparse-transfer") / "sparse_model" / "run_summary.json").read_text()
    )
    assert sparse_summary["train_metrics"]["train_samples"] == 32 + added
    report = result.report.read_text()
    assert "## Gate: PASSED (published to" in report and "| accuracy |" in report
    assert "latency (batch 1, sequence 16)" in report
    # the teacher was trained in the pipeline (dense), then distilled from
    teacher_summary = json.loads(
        (step_dir(result, "teacher") / "teacher" / "run_summary.json").read_text()
    )
    assert teacher_summary["teacher"] is None and teacher_summary["sparsity"]["after"] < 0.1
    # published: a complete, manifest-verified zoo entry with the int8 deployment and a card
    card = zoo_api.card(STUB, root=zoo_root)
    assert card["gate"]["passed"] is True and "eval_accuracy" in card["metrics"]
    files = storage.file_uris(zoo_api.entry_uri(STUB, zoo_root))
    assert "deployment/model.onnx" in files and "training/sparsity.json" in files
    sparsity = json.loads(
        Path(zoo_api.resolve(STUB, "model", root=zoo_root), "sparsity.json").read_text()
    )
    assert sparsity["overall_sparsity"] > 0.5


def test_teacher_stub_snapshot_data_and_gate_blocks_publish(s3_bucket, models, tmp_path):
    zoo_root = f"s3://{s3_bucket}/zoo"
    # the teacher, from the zoo: a dense model fine-tuned on SST-2 labels
    teacher = make_tiny_bert(
        tmp_path / "teacher", hidden_size=32, seed=2, id2label={0: "negative", 1: "positive"}
    )
    zoo_api.push(teacher, TEACHER_STUB, root=zoo_root)
    # the currently published model scores 1.0: a retrained one cannot beat it
    zoo_api.push(models["student"], STUB, root=zoo_root, card={"metrics": {"eval_accuracy": 1.0}})
    before = storage.read_manifest(zoo_api.entry_uri(STUB, zoo_root))
    for day, rows in (("2024-01-01", 8), ("2024-02-01", 32)):
        local = tmp_path / "snap" / day
        write_jsonl(sentiment_rows(rows), local / "train.jsonl")
        write_jsonl(sentiment_rows(16, seed=1), local / "validation.jsonl")
        storage.upload_dir(local, f"s3://{s3_bucket}/data/sst2/{day}")
    result = run(
        tmp_path, "teacher-stub",
        model_name_or_path=str(models["student"]), distill_teacher=TEACHER_STUB,
        dataset_snapshot_prefix=f"s3://{s3_bucket}/data/sst2",
        zoo_root=zoo_root, publish_stub=STUB, publish_force=True, min_metric=0.0,
        max_drop_vs_teacher=-1.0, must_beat_published=True,
    )  # fmt: skip
    assert result.passed is False and result.published == ""
    report = result.report.read_text()
    assert "## Gate: BLOCKED (not published)" in report and "published 1.0000" in report
    data_spec = json.loads((step_dir(result, "fetch-data") / "dataset" / "data.json").read_text())
    assert data_spec["snapshot"] == f"s3://{s3_bucket}/data/sst2/2024-02-01"
    train_rows = (
        (step_dir(result, "fetch-data") / "dataset" / "train.jsonl").read_text().count("\n")
    )
    assert train_rows == 32
    summary = json.loads(
        (step_dir(result, "sparse-transfer") / "sparse_model" / "run_summary.json").read_text()
    )
    assert summary["teacher"].endswith("teacher/teacher")  # distilled from the fetched stub
    after = storage.read_manifest(zoo_api.entry_uri(STUB, zoo_root))
    assert after == before  # blocked: the published entry is untouched
