"""Scale-out plumbing: the TrainJob manifest against Kubeflow Trainer v2.3.0's CRD schema,
the status reading, the torchrun command and the step's plan validation.

The schema is the TrainJob CRD's openAPIV3Schema copied from kubeflow/trainer v2.3.0
(tests/data/trainjob_crd_v2.3.0.schema.json names the file and commit). jsonschema
checks the structural schema; the two CEL rules at the top of the CRD (the name
format and length) are checked here from the rule text itself, since jsonschema
does not run CEL.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from sparse_transfer.errors import PipelineError
from sparse_transfer.scaleout import TRAINER_VERSION, TrainJobRequest, trainjob_outcome
from sparse_transfer.scaleout.plan import ScaleOut, node_argv, stage_inputs
from sparse_transfer.scaleout.torchrun import torchrun_command
from sparse_transfer.scaleout.trainjob import trainjob_manifest

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "data" / "trainjob_crd_v2.3.0.schema.json"


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def _cel_name_rules(schema: dict):
    """(regex, max length) from the CRD's own CEL rules on metadata.name."""
    rules = [v["rule"] for v in schema["x-kubernetes-validations"]]
    pattern = next(re.search(r"matches\('(.+)'\)", r).group(1) for r in rules if "matches" in r)
    size = next(int(re.search(r"<= (\d+)", r).group(1)) for r in rules if "size(" in r)
    return re.compile(pattern), size


def _request(**overrides) -> TrainJobRequest:
    fields = dict(
        name="sparse-transfer-0123456789ab",
        namespace="kubeflow-user",
        image="registry.example/sparse-transfer:0.1.0",
        num_nodes=2,
        nproc_per_node=4,
        node_args=node_argv(
            "text-classification",
            ["--model_name_or_path", "s3://b/w/inputs/model_name_or_path", "--output_dir", "/x"],
            "s3://b/w",
        ),
        s3_secret="sparse-transfer-s3",
        accelerator_type="nvidia.com/gpu",
        accelerator_limit=4,
    )
    fields.update(overrides)
    return TrainJobRequest(**fields)


def test_two_node_manifest_validates_against_the_trainjob_crd(schema):
    assert TRAINER_VERSION == "v2.3.0"
    manifest = trainjob_manifest(_request())
    jsonschema.Draft7Validator(schema).validate(manifest)
    pattern, size = _cel_name_rules(schema)
    name = manifest["metadata"]["name"]
    assert pattern.match(name) and len(name) <= size
    assert manifest["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert manifest["kind"] == "TrainJob"
    assert manifest["spec"]["runtimeRef"] == {
        "name": "torch-distributed",
        "kind": "ClusterTrainingRuntime",
        "apiGroup": "trainer.kubeflow.org",
    }
    trainer = manifest["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4
    assert trainer["image"] == "registry.example/sparse-transfer:0.1.0"
    assert trainer["command"] == ["torchrun", "-m", "sparse_transfer.cli.trainjob_node"]
    assert trainer["args"][:3] == ["--output_uri", "s3://b/w/output", "text-classification"]
    assert (
        trainer["args"][trainer["args"].index("--output_dir") + 1] == "/tmp/sparse-transfer-output"
    )
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "4"
    # Credentials come from the Secret by reference: no value is in the manifest.
    env = {e["name"]: e for e in trainer["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        assert "value" not in env[key]
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "sparse-transfer-s3", "key": key}


def test_the_schema_rejects_what_the_api_server_rejects(schema):
    """The copied schema is live: a wrong type or a missing runtimeRef fails validation."""
    manifest = trainjob_manifest(_request())
    validator = jsonschema.Draft7Validator(schema)
    bad = json.loads(json.dumps(manifest))
    bad["spec"]["trainer"]["numNodes"] = "two"
    assert not validator.is_valid(bad)
    bad = json.loads(json.dumps(manifest))
    del bad["spec"]["runtimeRef"]
    assert not validator.is_valid(bad)


@pytest.mark.parametrize("name", ["Sparse", "1job", "job_1", "a" * 64, "job-"])
def test_names_the_crd_refuses_are_refused_up_front(schema, name):
    pattern, size = _cel_name_rules(schema)
    assert not (pattern.match(name) and len(name) <= size)  # the CRD would refuse it too
    with pytest.raises(PipelineError, match="DNS-1035"):
        _request(name=name)


def test_bad_counts_are_refused():
    with pytest.raises(PipelineError, match="num_nodes must be >= 1, got 0"):
        _request(num_nodes=0)
    with pytest.raises(PipelineError, match="needs an accelerator_type"):
        _request(accelerator_type="")


def test_outcome_reads_the_trainjob_conditions():
    """Condition types and reasons as in kubeflow/trainer v2.3.0 trainjob_types.go."""
    assert trainjob_outcome({}) == ("running", "")
    running = {"status": {"conditions": [{"type": "Suspended", "status": "False"}]}}
    assert trainjob_outcome(running) == ("running", "")
    done = {
        "status": {
            "conditions": [{"type": "Complete", "status": "True", "reason": "JobsCompleted"}]
        }
    }
    assert trainjob_outcome(done) == ("complete", "JobsCompleted")
    failed = {
        "status": {
            "conditions": [
                {"type": "Complete", "status": "False"},
                {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                 "message": "TrainJob exceeded its activeDeadlineSeconds"},
            ]
        }
    }  # fmt: skip
    assert trainjob_outcome(failed) == (
        "failed",
        "DeadlineExceeded: TrainJob exceeded its activeDeadlineSeconds",
    )


def test_torchrun_command_stays_on_loopback():
    cmd = torchrun_command(2, "text-classification", ["--output_dir", "/o"])
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert cmd[cmd.index("--nproc_per_node") + 1] == "2"
    assert cmd[cmd.index("--master_addr") + 1] == "127.0.0.1"
    assert cmd[-5:] == ["sparse_transfer", "train", "text-classification", "--output_dir", "/o"]
    with pytest.raises(PipelineError, match="nproc_per_node must be >= 1"):
        torchrun_command(0, "text-classification", [])


def test_plan_validation(monkeypatch):
    assert not ScaleOut().distributed
    assert ScaleOut(nproc_per_node=2).distributed
    with pytest.raises(PipelineError, match="needs s3_secret"):
        ScaleOut(num_nodes=2)
    monkeypatch.delenv("SPARSE_TRANSFER_STAGING", raising=False)
    plan = ScaleOut(num_nodes=2, work_uri="minio://mlpipeline/v2/artifacts/x", s3_secret="s")
    with pytest.raises(PipelineError, match=r"needs an s3:// place every node can read: the "
                       r"pipeline root is 'minio://mlpipeline/v2/artifacts/x'"):  # fmt: skip
        plan.staging_uri()


def test_stage_inputs_publishes_local_artifacts_and_rewrites_argv(tmp_path):
    from sparse_transfer import storage

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"sentence": "a", "label": 0}\n')
    work = tmp_path / "work"
    (data / "validation.jsonl").write_text('{"sentence": "b", "label": 1}\n')
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("version: 1.1.0\nmodifiers: []\n")
    argv = ["--model_name_or_path", str(model), "--train_file", str(data / "train.jsonl"),
            "--recipe", str(recipe), "--distill_teacher", "disable",
            "--output_dir", str(tmp_path / "out"), "--seed", "3"]  # fmt: skip
    staged = stage_inputs(argv, str(work))
    assert staged[1] == f"{work}/inputs/model_name_or_path"
    assert staged[3] == f"{work}/inputs/train_file/train.jsonl"
    assert staged[5] == f"{work}/inputs/recipe/recipe.yaml"
    assert staged[6:] == argv[6:]  # "disable", the output dir and other flags unchanged
    assert storage.is_published(staged[1])
    assert (Path(staged[1]) / "config.json").read_text() == "{}"
    assert Path(staged[3]).read_text() == (data / "train.jsonl").read_text()
    # Only the named file travels, not the rest of its folder.
    assert sorted(p.name for p in Path(staged[3]).parent.iterdir()) == [
        "manifest.json",
        "train.jsonl",
    ]
    assert Path(staged[5]).read_text() == recipe.read_text()


def test_compiled_pipelines_take_num_nodes_and_nproc_per_node():
    """Both pipelines hand the training step their `advanced` object, whose num_nodes and
    nproc_per_node (default 1) the step reads; frontier keeps them as parameters."""
    import yaml

    from sparse_transfer.pipeline.settings import RunSettings, settings_keys

    root = Path(__file__).resolve().parents[2] / "pipelines" / "compiled"
    for name, step in (
        ("sparse_transfer_pipeline.yaml", "comp-sparse-transfer"),
        ("dense_teacher_pipeline.yaml", "comp-train-teacher"),
    ):
        spec = next(yaml.safe_load_all((root / name).read_text()))
        params = spec["root"]["inputDefinitions"]["parameters"]
        assert params["advanced"]["defaultValue"] == {}, name
        assert {"num_nodes", "nproc_per_node"} <= set(settings_keys(name.split("_pipeline")[0]))
        assert RunSettings().num_nodes == 1 and RunSettings().nproc_per_node == 1
        task = spec["root"]["dag"]["tasks"][step.removeprefix("comp-")]
        assert task["inputs"]["parameters"]["advanced"] == {"componentInputParameter": "advanced"}
        step_inputs = spec["components"][step]["inputDefinitions"]["parameters"]
        assert {"num_nodes", "nproc_per_node", "trainjob_image", "s3_secret"} <= set(step_inputs)


def test_step_scale_out_lays_advanced_over_the_flat_parameters():
    """Every training component builds its ScaleOut here: `advanced` wins, and the nodes'
    GPU count falls back from node_accelerator_limit to accelerator_limit."""
    from sparse_transfer.pipeline.settings import step_scale_out

    flat = dict(num_nodes=1, nproc_per_node=1, accelerator_type="nvidia.com/gpu",
                accelerator_limit="2", node_accelerator_limit="", work_uri="s3://b/w",
                s3_secret="s3-creds")  # fmt: skip
    plain = step_scale_out(None, **flat)
    assert (plain.num_nodes, plain.nproc_per_node, plain.accelerator_limit) == (1, 1, 2)
    scaled = step_scale_out({"num_nodes": 3, "node_accelerator_limit": "4"}, **flat)
    assert (scaled.num_nodes, scaled.accelerator_limit, scaled.work_uri) == (3, 4, "s3://b/w")
    with pytest.raises(PipelineError, match="num_nodes"):
        step_scale_out({"num_nodes": 0}, **flat)
