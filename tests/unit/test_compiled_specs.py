"""The checked-in compiled specs are fresh and carry the cluster settings the issue asks for."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.client import MIN_BACKEND
from tests.kfp_fake import driver_limits, runtime_fields_not_strings

ROOT = Path(__file__).resolve().parents[2]
COMPILED = ROOT / "pipelines" / "compiled"
CHART_COPY = ROOT / "charts" / "sparse-transfer" / "files" / "sparse_transfer_pipeline.yaml"
NAMES = ("sparse_transfer_pipeline.yaml", "dense_teacher_pipeline.yaml")
# Pipelines added by issue 25: checked fresh, and their training steps' GPU fields.
MORE = {
    "sparse_upstream_pipeline.yaml": "exec-prune-upstream",
    "frontier_pipeline.yaml": "exec-frontier-transfer",
}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """Compiles in a clean subprocess with the default image and secret (env overrides removed)."""
    out = tmp_path_factory.mktemp("compiled")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SPARSE_TRANSFER_IMAGE", "SPARSE_TRANSFER_S3_SECRET")
    }
    code = f"from pipelines.client import compile_pipelines; compile_pipelines({str(out)!r}, chart_copy=None)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def documents():
    """The pipeline spec and the Kubernetes platform spec (two YAML documents)."""
    return list(yaml.safe_load_all((COMPILED / NAMES[0]).read_text()))


@pytest.fixture(scope="module")
def spec(documents):
    return documents[0]


@pytest.mark.parametrize("name", NAMES)
def test_checked_in_spec_is_fresh(fresh, name):
    assert (COMPILED / name).read_text() == (fresh / name).read_text(), (
        f"pipelines/compiled/{name} is stale: run `sparse-transfer pipeline compile` and commit it"
    )


@pytest.mark.parametrize("name", sorted(MORE))
def test_added_specs_are_fresh_and_their_training_step_takes_a_gpu(fresh, name):
    assert (COMPILED / name).read_text() == (fresh / name).read_text(), (
        f"pipelines/compiled/{name} is stale: run `sparse-transfer pipeline compile` and commit it"
    )
    spec = next(yaml.safe_load_all((COMPILED / name).read_text()))
    assert runtime_fields_not_strings(spec) == []
    values = {
        "pipelinechannel--accelerator_type": "nvidia.com/gpu",
        "pipelinechannel--accelerator_limit": "1",
    }
    assert driver_limits(spec, MORE[name], values) == {"nvidia.com/gpu": "1"}
    assert not [c for c in spec["components"] if c.startswith("comp-condition")]


def test_frontier_fans_out_over_the_grid_and_collects():
    spec = next(yaml.safe_load_all((COMPILED / "frontier_pipeline.yaml").read_text()))
    loop = spec["root"]["dag"]["tasks"]["for-loop-1"]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--points"
    assert loop["iteratorPolicy"]["parallelismLimit"] == 4
    grid = spec["root"]["inputDefinitions"]["parameters"]["points"]["defaultValue"]
    assert len(grid) == 8 and {p.split(":")[0] for p in grid} == {"unstructured", "block4"}
    pick = spec["root"]["dag"]["tasks"]["pick-deployment"]["inputs"]
    assert pick["parameters"]["measured"]["taskOutputParameter"]["producerTask"] == "for-loop-1"
    assert pick["artifacts"]["deployments"]["taskOutputArtifact"]["producerTask"] == "for-loop-1"


def test_chart_copy_is_fresh(fresh):
    assert CHART_COPY.read_text() == (fresh / NAMES[0]).read_text(), (
        "charts/sparse-transfer/files/sparse_transfer_pipeline.yaml is stale: run `sparse-transfer pipeline compile`"
    )


def test_spec_has_every_step_in_one_shared_image(spec):
    executors = spec["deploymentSpec"]["executors"]
    functions = {
        e["container"]["args"][-1] if False else e["container"]["command"][-1]
        for e in executors.values()
    }
    for step in ("fetch_model", "fetch_data", "configure_training", "teacher", "sparse_transfer",
                 "evaluate", "export_onnx", "publish"):  # fmt: skip
        assert any(f"def {step}(" in body for body in functions), step
    images = {e["container"]["image"] for e in executors.values()}
    assert images == {"ghcr.io/sparse-transfer/sparse-transfer:0.1.0"}
    # the image ships kfp and the project: no pip install at step start
    assert not any("pip install" in " ".join(e["container"]["command"]) for e in executors.values())


def test_image_is_overridable_at_compile_time(tmp_path):
    env = dict(os.environ, SPARSE_TRANSFER_IMAGE="registry.local/st:dev")
    code = f"from pipelines.client import compile_pipelines; compile_pipelines({str(tmp_path)!r}, chart_copy=None)"
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    text = (tmp_path / NAMES[0]).read_text()
    assert "registry.local/st:dev" in text and "ghcr.io/sparse-transfer" not in text


def test_s3_credentials_come_from_the_secret_not_parameters(spec, documents):
    executors = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    wired = {name: e["secretAsEnv"][0] for name, e in executors.items() if "secretAsEnv" in e}
    for step in (
        "exec-fetch-data",
        "exec-fetch-model",
        "exec-teacher",
        "exec-sparse-transfer",
        "exec-publish",
    ):
        assert step in wired, step
        assert wired[step]["secretName"] == "sparse-transfer-s3"
        env = {m["envVar"] for m in wired[step]["keyToEnv"]}
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} <= env
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert not [p for p in parameters if "secret" in p.lower() or "access_key" in p.lower()]


def test_training_steps_have_parameter_driven_accelerators_and_no_cache(spec):
    executors = spec["deploymentSpec"]["executors"]
    for name in ("exec-teacher", "exec-sparse-transfer"):
        resources = executors[name]["container"]["resources"]
        assert resources["accelerator"] == {
            "resourceCount": "{{$.inputs.parameters['pipelinechannel--accelerator_limit']}}",
            "resourceType": "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}",
        }
        assert resources["cpuRequest"] == 4.0
    tasks = spec["root"]["dag"]["tasks"]
    for name in ("teacher", "sparse-transfer"):
        assert not tasks[name].get("cachingOptions", {}).get("enableCache", False), name
    # Fetch and publish read or change outside state KFP's cache key cannot see.
    for name in ("fetch-data", "fetch-model", "publish"):
        assert not tasks[name].get("cachingOptions", {}).get("enableCache", False), name
    # everything runs on kfp's local runner too: no condition branches, no OneOf
    assert not [name for name in spec["components"] if name.startswith("comp-condition")]


def test_dense_teacher_pipeline_trains_on_the_accelerator():
    spec = next(yaml.safe_load_all((COMPILED / NAMES[1]).read_text()))
    resources = spec["deploymentSpec"]["executors"]["exec-train-teacher"]["container"]["resources"]
    assert (
        resources["accelerator"]["resourceType"]
        == "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
    )
    assert spec["root"]["inputDefinitions"]["parameters"]["seed"]["defaultValue"] == 20811


def test_io_steps_retry(spec):
    tasks = spec["root"]["dag"]["tasks"]
    for name in ("fetch-data", "fetch-model", "publish"):
        assert tasks[name]["retryPolicy"]["maxRetryCount"] == 3, name
    assert "retryPolicy" not in tasks["sparse-transfer"]


def test_reference_defaults_are_pipeline_parameters(spec):
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    defaults = {name: p.get("defaultValue") for name, p in parameters.items()}
    assert defaults["task_name"] == "sst2" and defaults["max_seq_length"] == 128
    assert defaults["per_device_train_batch_size"] == 32 and defaults["fp16"] is True
    assert defaults["recipe"].endswith("sst2/pruned90_quant-none")
    assert defaults["distill_teacher"].endswith("sst2/base-none")
    assert defaults["teacher_seed"] == 20811
    for name in ("doc_stride", "label_column_name", "input_column_names", "validation_ratio", "dataset_config_name",
                 "gradient_accumulation_steps", "recipe_args", "zoo_root", "publish_stub", "min_metric",
                 "max_drop_vs_teacher", "dataset_snapshot_prefix", "accelerator_type"):  # fmt: skip
        assert name in parameters, name


@pytest.mark.parametrize("name", NAMES)
def test_gpu_fields_come_from_string_parameters_as_kfps_driver_reads_them(name):
    """KFP's driver reads runtime resource placeholders with GetStringValue() (tests/kfp_fake.py)."""
    spec = next(yaml.safe_load_all((COMPILED / name).read_text()))
    assert runtime_fields_not_strings(spec) == []
    executor = "exec-sparse-transfer" if name.startswith("sparse") else "exec-train-teacher"
    labels = ["exec-sparse-transfer", "exec-teacher"] if name.startswith("sparse") else [executor]
    values = {
        "pipelinechannel--accelerator_type": "nvidia.com/gpu",
        "pipelinechannel--accelerator_limit": "1",
    }
    assert driver_limits(spec, executor, values) == {"nvidia.com/gpu": "1"}
    # What the issue saw: an int parameter reaches the driver as a number, and no GPU is set.
    assert driver_limits(spec, executor, {**values, "pipelinechannel--accelerator_limit": 1}) == {}
    broken = json.loads(json.dumps(spec))
    root_parameter = broken["root"]["inputDefinitions"]["parameters"]["accelerator_limit"]
    root_parameter["parameterType"] = "NUMBER_INTEGER"
    assert runtime_fields_not_strings(broken) == [
        f"{label}.accelerator.resourceCount <- pipelinechannel--accelerator_limit (NUMBER_INTEGER)"
        for label in labels
    ]


def test_aws_region_reaches_s3_steps_from_an_optional_secret_key(documents):
    executors = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step in ("exec-fetch-data", "exec-fetch-model", "exec-publish", "exec-sparse-transfer"):
        wired = executors[step]["secretAsEnv"]
        optional = [w for w in wired if w.get("optional")]
        assert [m["envVar"] for w in optional for m in w["keyToEnv"]] == ["AWS_DEFAULT_REGION"]
        required = [w for w in wired if not w.get("optional")]
        assert {m["envVar"] for w in required for m in w["keyToEnv"]} == {
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL",
        }


_STRICT_PARSE = """
import json, sys
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
import importlib.util
# kfp/kubernetes/__init__.py imports the whole SDK; only its generated proto module is loaded.
found = importlib.util.spec_from_file_location("k8s_pb2", K8S_PB2)
k8s = importlib.util.module_from_spec(found)
found.loader.exec_module(k8s)
for pipeline_spec, platform_spec in json.load(sys.stdin):
    json_format.ParseDict(pipeline_spec, pipeline_spec_pb2.PipelineSpec())
    json_format.ParseDict(platform_spec, pipeline_spec_pb2.PlatformSpec())
    executors = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for executor in executors.values():
        json_format.ParseDict(executor, k8s.KubernetesExecutorConfig())
print("parsed", len(executors))
"""


@pytest.mark.integration
def test_specs_parse_strictly_with_the_oldest_supported_backends_protos(tmp_path):
    """The protos of the KFP release at the floor (`MIN_BACKEND`) know every field we emit.

    The Python wheels `kfp-pipeline-spec` and `kfp-kubernetes` of that release carry the
    same .proto files as the backend (api/v2alpha1/pipeline_spec.proto and
    kubernetes_platform/proto/kubernetes_executor_config.proto at that tag); parsing without
    ignoring unknown fields catches a field the backend would drop (SecretAsEnv.optional
    only exists from 2.15.0). They are installed into a throwaway folder and imported alone.
    """
    floor = ".".join(map(str, MIN_BACKEND))
    # Two folders: pip --target will not add a package to a folder that has its namespace.
    spec_dir, k8s_dir = tmp_path / "spec", tmp_path / "k8s"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--target"]
    steps = [
        [*pip, str(spec_dir), f"kfp-pipeline-spec=={floor}", "googleapis-common-protos"],
        [*pip, str(k8s_dir), "--no-deps", f"kfp-kubernetes=={floor}"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.skip(
                f"cannot install the KFP {floor} proto wheels (offline?): {done.stderr[-300:]}"
            )
    specs = [list(yaml.safe_load_all((COMPILED / name).read_text())) for name in NAMES]
    result = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            f"import sys; sys.path[:0] = [{str(spec_dir)!r}]\n"
            f"K8S_PB2 = {str(k8s_dir / 'kfp/kubernetes/kubernetes_executor_config_pb2.py')!r}\n"
            + _STRICT_PARSE,
        ],
        input=json.dumps(specs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("parsed ")
