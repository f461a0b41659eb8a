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
    # max_seq_length 0 = unset: the task's own default (128 here, 384 for QA) applies
    assert defaults["task_name"] == "sst2" and defaults["max_seq_length"] == 0
    assert defaults["per_device_train_batch_size"] == 32 and defaults["trainer_flags"] == {}
    # The rarely changed flags moved off the form into trainer_flags: their reference
    # defaults are the opening steps' own input defaults now.
    steps = spec["components"]
    configure = steps["comp-configure-training"]["inputDefinitions"]["parameters"]
    data = steps["comp-fetch-data"]["inputDefinitions"]["parameters"]
    assert configure["fp16"]["defaultValue"] is True and configure["seed"]["defaultValue"] == 42
    assert "trainer_flags" in configure and "trainer_flags" in data
    assert defaults["recipe"].endswith("sst2/pruned90_quant-none")
    assert defaults["distill_teacher"].endswith("sst2/base-none")
    # teacher_seed moved into `advanced`: the teacher step's seed input is the reference's 20811
    assert defaults["advanced"] == {} and "teacher_seed" not in parameters
    seed = spec["root"]["dag"]["tasks"]["teacher"]["inputs"]["parameters"]["seed"]
    assert seed == {"runtimeValue": {"constant": 20811}}
    for name in ("recipe_args", "zoo_root", "publish_stub", "min_metric", "max_drop_vs_teacher",
                 "accelerator_type", "trainer_flags"):  # fmt: skip
        assert name in parameters, name
    for name in ("doc_stride", "gradient_accumulation_steps"):
        assert name in configure and name not in parameters, name
    for name in ("label_column_name", "input_column_names", "validation_ratio",
                 "dataset_config_name", "dataset_snapshot_prefix"):  # fmt: skip
        assert name in data and name not in parameters, name


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


def test_zoo_root_and_region_reach_every_s3_step_from_the_charts_configmap(documents):
    """One place (the chart's settings ConfigMap) gives every step the zoo root, so a UI run
    with defaults (``zoo_root`` empty) finds the zoo; required keys, no ``optional`` field
    (which KFP before 2.15 drops, making an optional key required)."""
    executors = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    secret_users = {name for name, e in executors.items() if "secretAsEnv" in e}
    assert {"exec-fetch-data", "exec-fetch-model", "exec-teacher", "exec-sparse-transfer",
            "exec-publish", "exec-deploy-serving"} <= secret_users  # fmt: skip
    for name in secret_users:
        (wired,) = executors[name]["configMapAsEnv"]
        assert wired["configMapName"] == "sparse-transfer-settings"
        assert {m["envVar"] for m in wired["keyToEnv"]} == {
            "SPARSE_TRANSFER_ZOO", "AWS_DEFAULT_REGION", "SPARSE_TRANSFER_STAGING"}  # fmt: skip
        assert not [w for w in executors[name]["secretAsEnv"] if w.get("optional")]
        assert not wired.get("optional")


def test_trainjob_image_is_not_a_compiled_constant(spec):
    """The nodes run the step's own image (read from its pod): nothing for the chart to miss."""
    text = json.dumps(spec["root"]["dag"]["tasks"])
    assert "ghcr.io/sparse-transfer" not in text
    assert (
        "trainjob_image"
        not in spec["root"]["dag"]["tasks"]["sparse-transfer"]["inputs"]["parameters"]
    )


# Every KFP backend the project claims (pipelines.client.SUPPORTED_BACKENDS), with the PyPI
# releases carrying that backend's protos: kfp-pipeline-spec is api/v2alpha1/python at the tag
# (0.6.0 at 2.5.0); kfp-kubernetes 1.4.0, the version named at tag 2.5.0, predates that tag's
# kubernetes_executor_config.proto (no SecretAsEnv.secret_name_parameter), 1.5.0 is the first
# release carrying it.
PROTO_WHEELS = {
    "2.5.0": ("0.6.0", "1.5.0"),
    "2.15.0": ("2.15.0", "2.15.0"),
    "2.16.0": ("2.16.0", "2.16.0"),
    "2.17.0": ("2.17.0", "2.17.0"),
}
# A field the driver drops that changes nothing: `optional: false` is the proto default.
HARMLESS_DROPS = (".optional=false",)


def _proto_cache() -> Path:
    base = os.environ.get("SPARSE_TRANSFER_KFP_PROTOS")
    return Path(base) if base else Path.home() / ".cache" / "sparse-transfer" / "kfp-protos"


def _wheels(backend: str) -> tuple[Path, Path]:
    """The release's two wheels in the cache (installed once); skips when offline and uncached."""
    spec_version, k8s_version = PROTO_WHEELS[backend]
    spec_dir = _proto_cache() / f"kfp-pipeline-spec-{spec_version}"
    k8s_dir = _proto_cache() / f"kfp-kubernetes-{k8s_version}"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--retries", "0", "--timeout",
           "15", "--target"]  # fmt: skip
    # Two folders: pip --target will not add a package to a folder that has its namespace. The
    # spec wheel brings the protobuf it was generated for (run with -S: nothing else is seen).
    for folder, args in (
        (spec_dir, [f"kfp-pipeline-spec=={spec_version}", "googleapis-common-protos"]),
        (k8s_dir, ["--no-deps", f"kfp-kubernetes=={k8s_version}"]),
    ):
        if (folder / ".complete").is_file():
            continue
        done = subprocess.run([*pip, str(folder), *args], capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"KFP {backend} proto wheels not cached in {folder.parent} and pip "
                        f"cannot fetch them (offline?): {done.stderr.strip()[-200:]}")  # fmt: skip
        (folder / ".complete").write_text(" ".join(args))
    return spec_dir, k8s_dir / "kfp" / "kubernetes" / "kubernetes_executor_config_pb2.py"


def _read_as(backend: str, specs: dict) -> dict:
    spec_dir, k8s_pb2 = _wheels(backend)
    result = subprocess.run(
        [sys.executable, "-S", str(ROOT / "tests" / "kfp_protos_check.py"), str(spec_dir),
         str(k8s_pb2)],
        input=json.dumps(specs), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.parametrize("backend", sorted(PROTO_WHEELS))
def test_specs_read_the_same_on_every_supported_kfp_backend(backend):
    """As that release's API server and driver read them, with that release's protos.

    The API server parses PipelineSpec and PlatformSpec strictly (protojson.Unmarshal in
    backend/src/apiserver/template/v2_template.go: an unknown field refuses the upload); the
    driver parses each KubernetesExecutorConfig allowing unknown fields
    (backend/src/common/util/json.go UnmarshalString), so a newer field is silently lost. Only
    drops that change nothing are allowed: an `optional: true` Secret key lost on 2.5 would
    make a pod wait for a key the Secret does not have.
    """
    from pipelines.client import SUPPORTED_BACKENDS

    assert backend in SUPPORTED_BACKENDS
    specs = {name: list(yaml.safe_load_all((COMPILED / name).read_text())) for name in NAMES}
    report = _read_as(backend, specs)
    assert report["strict"] == []
    assert [d for d in report["dropped"] if not d.endswith(HARMLESS_DROPS)] == []


def test_the_check_sees_what_kfp_2_5_would_lose(documents):
    """The old spec (an optional Secret key for the region) fails the 2.5 check."""
    old = json.loads(json.dumps(documents))
    executor = old[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-publish"]
    executor["secretAsEnv"].append({"keyToEnv": [{"envVar": "AWS_DEFAULT_REGION",
                                    "secretKey": "AWS_DEFAULT_REGION"}], "optional": True,
                                    "secretName": "sparse-transfer-s3"})  # fmt: skip
    report = _read_as("2.5.0", {"old.yaml": old})
    lost = [d for d in report["dropped"] if not d.endswith(HARMLESS_DROPS)]
    assert lost == ["old.yaml:exec-publish.secretAsEnv[1].optional=true"]


def test_the_floor_is_the_oldest_supported_backend():
    from pipelines.client import SUPPORTED_BACKENDS

    assert MIN_BACKEND == (2, 5, 0)
    assert min(tuple(int(x) for x in v.split(".")) for v in SUPPORTED_BACKENDS) == MIN_BACKEND


@pytest.mark.parametrize("name", NAMES)
def test_every_run_form_parameter_is_described(name):
    """KFP's "Create run" form shows each parameter's description (from the docstring's Args:,
    kfp/dsl/component_factory.py); before, 7 of the 49 had one."""
    spec = next(yaml.safe_load_all((COMPILED / name).read_text()))
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert [p for p, v in parameters.items() if len(v.get("description", "")) < 15] == []


def test_an_undescribed_parameter_fails_at_import():
    from pipelines._docs import described

    def pipeline(task: str = "", brand_new_knob: int = 0):
        """Summary."""

    with pytest.raises(ValueError, match="pipeline parameter 'brand_new_knob' has no description"):
        described(pipeline)


@pytest.mark.parametrize("name", NAMES)
def test_a_multi_node_run_can_leave_the_waiting_step_without_gpus(name):
    """With exactly num_nodes x N free GPUs, the step that only waits for the TrainJob must hold
    none: accelerator_limit "0" gives its pod a zero limit (KFP's driver, driver.go
    initPodSpecPatch) while node_accelerator_limit reaches the TrainJob's nodes."""
    spec = next(yaml.safe_load_all((COMPILED / name).read_text()))
    executor = "exec-sparse-transfer" if name.startswith("sparse") else "exec-train-teacher"
    task = "sparse-transfer" if name.startswith("sparse") else "train-teacher"
    values = {
        "pipelinechannel--accelerator_type": "nvidia.com/gpu",
        "pipelinechannel--accelerator_limit": "0",
    }
    assert driver_limits(spec, executor, values) == {"nvidia.com/gpu": "0"}
    # node_accelerator_limit travels in the run's `advanced` object, read by the step itself
    inputs = spec["root"]["dag"]["tasks"][task]["inputs"]["parameters"]
    assert inputs["advanced"] == {"componentInputParameter": "advanced"}
    assert spec["root"]["inputDefinitions"]["parameters"]["advanced"]["parameterType"] == "STRUCT"
    body = spec["deploymentSpec"]["executors"][executor]["container"]["command"][-1]
    assert "scale = step_scale_out(\n        advanced," in body
    # ... which gives the nodes node_accelerator_limit GPUs (tests/unit/test_scaleout.py)
