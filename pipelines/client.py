"""Compile, run locally, upload, submit and schedule the pipelines (the kfp side of the CLI).

`pipelines.cli` parses arguments and imports this module lazily;
the library itself never imports kfp.
"""

from __future__ import annotations

import copy
import inspect
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparse_transfer.errors import PipelineError
from sparse_transfer.pipeline.config import RunConfig, load_run_config, to_kfp_cron

ROOT = Path(__file__).resolve().parent.parent
COMPILED_DIR = ROOT / "pipelines" / "compiled"
CHART_COPY = ROOT / "charts" / "sparse-transfer" / "files" / "sparse_transfer_pipeline.yaml"
TOKEN_ENV = "KF_PIPELINES_TOKEN"
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"


def pipelines() -> dict[str, Any]:
    """Pipeline name (as used in run configs) -> the kfp pipeline object."""
    from pipelines.dense_teacher_pipeline import dense_teacher_pipeline
    from pipelines.frontier_pipeline import frontier_pipeline
    from pipelines.sparse_transfer_pipeline import sparse_transfer_pipeline
    from pipelines.sparse_upstream_pipeline import sparse_upstream_pipeline

    return {
        "sparse_transfer": sparse_transfer_pipeline,
        "dense_teacher": dense_teacher_pipeline,
        "sparse_upstream": sparse_upstream_pipeline,
        "frontier": frontier_pipeline,
    }


def get_pipeline(name: str) -> Any:
    known = pipelines()
    if name not in known:
        raise PipelineError(f"unknown pipeline {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def pipeline_parameters(pipeline: Any) -> dict[str, Any]:
    """Parameter name -> default, read from the pipeline function's signature."""
    signature = inspect.signature(pipeline.pipeline_func)
    return {name: p.default for name, p in signature.parameters.items()}


def known_parameters() -> dict[str, dict[str, Any]]:
    return {name: pipeline_parameters(p) for name, p in pipelines().items()}


def read_config(path: str | Path) -> RunConfig:
    """Loads a run config, checking the pipeline name and every parameter."""
    return load_run_config(path, known_parameters())


def compiled_path(name: str, directory: Path = COMPILED_DIR) -> Path:
    return directory / f"{name}_pipeline.yaml"


def compile_pipelines(
    directory: str | Path = COMPILED_DIR, chart_copy: Path | None = CHART_COPY
) -> list[Path]:
    """Writes every pipeline's spec to `directory` (and the chart's copy of the main one).

    Each file is written next to its destination and renamed into place, so a
    reader never sees half a spec.
    """
    from kfp import compiler

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, pipeline in pipelines().items():
        target = compiled_path(name, directory)
        _atomic(target, lambda tmp, p=pipeline: compiler.Compiler().compile(p, str(tmp)))
        written.append(target)
    if chart_copy is not None:
        chart_copy.parent.mkdir(parents=True, exist_ok=True)
        source = compiled_path("sparse_transfer", directory)
        _atomic(chart_copy, lambda tmp: shutil.copyfile(source, tmp))
        written.append(chart_copy)
    return written


def _atomic(target: Path, write: Callable[[Path], Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".yaml")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the spec from other users and the chart
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------- local runs


@dataclass
class LocalRunResult:
    pipeline_root: Path
    report: Path | None
    passed: bool | None
    published: str


def with_overrides(config: RunConfig, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config's parameters with ``--set`` overrides laid over them, checked the same way
    (flat flag and setting names fold into ``trainer_flags``/``advanced``, merged key by key)."""
    from sparse_transfer.pipeline.config import merge_parameters, validate_parameters

    if not overrides:
        return dict(config.parameters)
    known = pipeline_parameters(get_pipeline(config.pipeline))
    checked = validate_parameters(overrides, known, source="overrides", pipeline=config.pipeline)
    return merge_parameters(config.parameters, checked)


def run_local(
    config_path: str | Path,
    *,
    runner: str = "subprocess",
    pipeline_root: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LocalRunResult:
    """Runs a pipeline with kfp's local runner (no cluster).

    Args:
        config_path: run config YAML.
        runner: ``subprocess`` (this Python environment) or ``docker`` (the
            pipeline image, through the Docker API at ``DOCKER_HOST``).
        pipeline_root: where artifacts go (default: the config's
            ``local.pipeline_root``, else ``demo-output/pipeline-root``).
        overrides: parameters replacing the config's (validated the same way).

    The local runner ignores caching, resources and Kubernetes settings (S3
    credentials come from this process's environment), and steps are not retried
    (`without_retries`): a failed step fails the run at once.
    """
    from kfp import local

    config = read_config(config_path)
    pipeline = get_pipeline(config.pipeline)
    parameters = with_overrides(config, overrides)
    root = Path(pipeline_root or config.local.get("pipeline_root") or "demo-output/pipeline-root")
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    seed = config.local.get("seed_zoo", "")
    if seed:
        _seed_zoo(seed, parameters.get("zoo_root", ""))
    if config.local.get("seed_data") and not parameters.get("train_file"):
        parameters.update(_seed_data(root / "data" / config.local["seed_data"]))
    if runner == "subprocess":
        chosen = local.SubprocessRunner(use_venv=False)
    elif runner == "docker":
        from pipelines.docker_runner import docker_runner

        chosen = docker_runner()
    else:
        raise PipelineError(f"unknown local runner {runner!r}; use subprocess or docker")
    local.init(runner=chosen, pipeline_root=str(root), raise_on_error=True)
    try:
        task = without_retries(pipeline)(**parameters)
    except RuntimeError as exc:  # kfp's local runner reports a failed task this way
        raise PipelineError(
            f"local run of {config.pipeline} failed: {exc}\n(the failing step's log is printed above; "
            f"its artifacts are under {root})"
        ) from None
    outputs = task.outputs
    report = outputs.get("report")
    return LocalRunResult(
        pipeline_root=root,
        report=Path(report.path) if report is not None else None,
        passed=outputs.get("passed"),
        published=outputs.get("published") or "",
    )


def without_retries(pipeline: Any) -> Any:
    """A copy of `pipeline` whose steps run once, for local runs.

    On a cluster the fetch/publish steps retry with backoff (`pipelines._settings.RETRIES`)
    to ride out a restarting S3 server. kfp's local runner honours the same policy
    (kfp/local/orchestrator/task_executor.py: ``for attempt in range(max_retries + 1)``
    with ``time.sleep(backoff_duration * backoff_factor**attempt)``), so a deterministic
    error (a bad stub, a missing folder, a bad recipe) was retried for 3.5 minutes.
    Locally a failed step fails once; transient S3 errors are still retried per request
    by `sparse_transfer.storage`. The pipeline object itself is left unchanged.
    """
    local_copy = copy.deepcopy(pipeline)
    spec = local_copy.pipeline_spec
    dags = [spec.root.dag] + [c.dag for c in spec.components.values() if c.HasField("dag")]
    for dag in dags:
        for task in dag.tasks.values():
            task.ClearField("retry_policy")
    return local_copy


def _seed_zoo(kind: str, zoo_root: str) -> None:
    """Seeds the embedded zoo (`sparse-transfer zoo seed`) so the run's stubs resolve.

    Entries that exist are kept, so only the first run pays for it.
    """
    from sparse_transfer.embedded import zoo_seed

    zoo_seed.seed(kind, root=zoo_root or None)


def _seed_data(directory: Path) -> dict[str, str]:
    """Writes SST-2-style data (``sentence``, ``label``) once; returns the file parameters.

    ``sentiment``: 256/64 tiny fixture sentences; ``movie_reviews``: the offline
    Rotten Tomatoes + Pang & Lee splits (`sparse_transfer.embedded.movie_reviews`).
    """
    train, validation = directory / "train.jsonl", directory / "validation.jsonl"
    if not (train.is_file() and validation.is_file()):
        if directory.name == "movie_reviews":
            from sparse_transfer.embedded.movie_reviews import make_splits

            make_splits(directory)
        else:
            from sparse_transfer.embedded import fixtures

            rows = fixtures.sentiment_rows(320, seed=0)
            fixtures.write_jsonl(rows[:256], train)
            fixtures.write_jsonl(rows[256:], validation)
    return {"train_file": str(train), "validation_file": str(validation)}


# ------------------------------------------------------------------ cluster

# The KFP backends the compiled specs are checked against (tests/unit/test_compiled_specs.py
# reads them with each release's protos, as its API server and driver do): Kubeflow 1.10.x ships
# 2.5.0, Kubeflow 1.11 ships 2.15.0 (kubeflow/manifests README). The floor is 2.5.0: per-task
# resource and accelerator placeholders are read by the driver from 2.4
# (backend/src/v2/driver/driver.go, initPodSpecPatch) and `secretAsEnv.secretNameParameter` from
# 2.5. Kubeflow 1.9.1's KFP 2.3.0 drops that field, and its driver sets no runtime GPU limit.
# The specs use no `optional` Secret key (that field exists only from 2.15.0; older drivers drop
# it, backend/src/common/util/json.go UnmarshalString, making the key required).
SUPPORTED_BACKENDS = ("2.5.0", "2.15.0", "2.16.0", "2.17.0")
MIN_BACKEND = (2, 5, 0)
COOKIE_ENV = "KF_PIPELINES_COOKIE"


def make_client(
    host: str | None = None,
    *,
    token: str | None = None,
    sa_token_path: str | None = None,
    namespace: str | None = None,
    ssl_ca_cert: str | None = None,
    verify_ssl: bool | None = None,
    cookies: str | None = None,
) -> Any:
    """A `kfp.Client` with the authentication a KFP user expects, first match wins:

    1. a bearer token: `token` or ``$KF_PIPELINES_TOKEN`` (e.g. ``kubectl create token``,
       an OIDC/Dex id token);
    2. a service-account token file: `sa_token_path` or ``$KF_PIPELINES_SA_TOKEN_PATH``
       (projected volume, refreshed on every request);
    3. a session cookie: `cookies` or ``$KF_PIPELINES_COOKIE`` (``authservice_session=...``
       or ``oauth2_proxy_kubeflow=...`` copied from a browser: Kubeflow behind a login page);
    4. nothing: kfp's own defaults (in-cluster config when `host` is None and we
       run in a pod, else the kubeconfig's port-forward/proxy).
    """
    import kfp
    from kfp.client import ServiceAccountTokenVolumeCredentials

    token = token or os.environ.get(TOKEN_ENV) or None
    sa_token_path = sa_token_path or os.environ.get(SA_TOKEN_ENV) or None
    cookies = cookies or os.environ.get(COOKIE_ENV) or None
    kwargs: dict[str, Any] = {"host": host, "ssl_ca_cert": ssl_ca_cert, "verify_ssl": verify_ssl}
    if namespace:
        kwargs["namespace"] = namespace
    if token:
        kwargs["existing_token"] = token
    elif sa_token_path:
        if not Path(sa_token_path).is_file():
            raise PipelineError(f"service-account token file {sa_token_path} does not exist")
        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path=sa_token_path)
    elif cookies:
        kwargs["cookies"] = cookies
    try:
        return kfp.Client(**kwargs)
    except Exception as exc:  # kfp raises bare exceptions for unreachable hosts
        raise PipelineError(
            f"cannot reach Kubeflow Pipelines at {host or 'in-cluster'}: {exc}"
        ) from exc


def backend_info(client: Any) -> dict[str, Any]:
    """The server's ``/apis/v2beta1/healthz`` answer (``tag_name``, ``multi_user``).

    Read raw: kfp-server-api's model drops ``tag_name``
    (backend/src/apiserver/main.go, healthzResponse, has it).
    """
    import json

    try:
        response = client._healthz_api.healthz_service_get_healthz(_preload_content=False)
        return json.loads(response.data or b"{}")
    except Exception as exc:
        raise PipelineError(f"cannot read the KFP API version (healthz): {exc}") from exc


def check_backend(client: Any) -> dict[str, Any]:
    """Refuses a KFP backend older than `MIN_BACKEND`; returns the healthz answer.

    A build that reports no release tag (``unknown``, a dev build) is let through.
    """
    import re

    info = backend_info(client)
    tag = str(info.get("tag_name") or "")
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", tag)
    if match and tuple(int(g) for g in match.groups()) < MIN_BACKEND:
        floor = ".".join(map(str, MIN_BACKEND))
        raise PipelineError(
            f"Kubeflow Pipelines backend {tag} is too old: sparse-transfer's pipelines need "
            f"KFP >= {floor} (Kubeflow >= 1.10: runtime GPU/resource placeholders, Secret names "
            "as parameters); "
            "upgrade KFP, see docs/kubeflow.md"
        )
    return info


@contextmanager
def _package(name: str, package: str | Path | None = None) -> Iterator[Path]:
    """The spec to send: `package` when given (e.g. the Helm chart's rendered copy, which
    carries the chart's image), else a freshly compiled spec of pipeline `name`.

    Compiling honours ``SPARSE_TRANSFER_IMAGE`` and ``SPARSE_TRANSFER_S3_SECRET`` of this
    shell; with neither set it is byte-identical to the checked-in spec (a test checks).
    """
    if package is not None:
        path = Path(package)
        if not path.is_file():
            raise PipelineError(f"pipeline package {path} does not exist")
        yield path
        return
    from kfp import compiler

    pipeline = get_pipeline(name)
    with tempfile.TemporaryDirectory(prefix="sparse-transfer-spec-") as tmp:
        path = compiled_path(name, Path(tmp))
        compiler.Compiler().compile(pipeline, str(path))
        yield path


def _equals(key: str, value: str) -> str:
    import json

    return json.dumps({"predicates": [{"operation": "EQUALS", "key": key, "stringValue": value}]})


def _find_pipeline(client: Any, name: str, namespace: str | None) -> str | None:
    """The id of pipeline `name` in `namespace` (shared pipelines when None)."""
    found = client.list_pipelines(filter=_equals("display_name", name), namespace=namespace)
    pipelines = found.pipelines or []
    if len(pipelines) > 1:
        raise PipelineError(f"{len(pipelines)} pipelines named {name!r}; KFP keeps names unique")
    return pipelines[0].pipeline_id if pipelines else None


def _find_version(client: Any, pipeline_id: str, version: str | None) -> str | None:
    """The id of version `version` (the newest version when None) of a pipeline."""
    if version is None:
        found = client.list_pipeline_versions(pipeline_id, sort_by="created_at desc", page_size=1)
    else:
        found = client.list_pipeline_versions(pipeline_id, filter=_equals("display_name", version))
    versions = found.pipeline_versions or []
    return versions[0].pipeline_version_id if versions else None


def upload(
    client: Any,
    pipeline: str = "sparse_transfer",
    *,
    name: str | None = None,
    version: str | None = None,
    namespace: str | None = None,
    package: str | Path | None = None,
) -> dict[str, str]:
    """Uploads the spec as a new pipeline, or as a new version of the existing one.

    Idempotent per version name: a version that already exists (a retried hook Job) is
    returned, not uploaded twice. `namespace` makes a namespaced pipeline (multi-user KFP:
    a shared one needs rights in KFP's own namespace, pipeline_server.go canAccessPipeline).

    Returns:
        ``pipeline_id`` and ``version_id`` (the version uploaded or found).
    """
    from sparse_transfer import __version__

    name = name or get_pipeline(pipeline).name
    existing = _find_pipeline(client, name, namespace)
    with _package(pipeline, package) as path:
        if existing is None and version is not None:
            # The pipeline alone, then its first version under the requested name
            # (CreatePipeline, backend/api/v2beta1/pipeline.proto): upload_pipeline would name
            # the first version after the pipeline and a later lookup by name would miss it.
            from kfp_server_api import V2beta1Pipeline

            existing = client._pipelines_api.pipeline_service_create_pipeline(
                V2beta1Pipeline(
                    name=name,
                    display_name=name,
                    description=get_pipeline(pipeline).description,
                    namespace=namespace or "",
                )
            ).pipeline_id
        elif existing is None:
            created = client.upload_pipeline(
                str(path),
                pipeline_name=name,
                description=get_pipeline(pipeline).description,
                namespace=namespace,
            )
            # KFP creates the pipeline's first version with it (resource_manager.go).
            return {
                "pipeline_id": created.pipeline_id,
                "version_id": _find_version(client, created.pipeline_id, None) or "",
            }
        if version is not None:
            found = _find_version(client, existing, version)
            if found is not None:
                return {"pipeline_id": existing, "version_id": found}
        version = version or f"{name}-{__version__}-{_stamp()}"
        created = client.upload_pipeline_version(
            str(path), pipeline_version_name=version, pipeline_id=existing
        )
    return {"pipeline_id": existing, "version_id": created.pipeline_version_id}


def _stamp() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")


def submit(
    client: Any,
    config_path: str | Path,
    *,
    experiment: str | None = None,
    namespace: str | None = None,
    package: str | Path | None = None,
    pipeline_root: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> str:
    """Creates one run from a run config (and ``--set`` `overrides`); returns the run id.

    `pipeline_root` (e.g. ``s3://bucket/pipeline-root``) sets where this run's artifacts go,
    instead of the namespace's ``kfp-launcher`` default (RuntimeConfig.pipeline_root).
    """
    config = read_config(config_path)
    parameters = with_overrides(config, overrides)
    check_backend(client)
    with _package(config.pipeline, package) as path:
        run = client.create_run_from_pipeline_package(
            str(path),
            arguments=parameters,
            run_name=config.run_name or f"{config.pipeline}-{_stamp()}",
            experiment_name=experiment or config.experiment,
            namespace=namespace,
            pipeline_root=pipeline_root,
        )
    return run.run_id


def _given(parameters: Mapping[str, Any], key: str) -> Any:
    """A parameter's value, top-level or inside the run form's JSON objects (where run configs'
    flat names fold to: `sparse_transfer.pipeline.config.validate_parameters`); None if unset."""
    for holder in (parameters, parameters.get("trainer_flags"), parameters.get("advanced")):
        if isinstance(holder, Mapping) and key in holder:
            return holder[key]
    return None


def _retraining_parameters(config: RunConfig, config_path: str | Path) -> dict[str, Any]:
    """The run config's parameters for a recurring run, ``must_beat_published`` forced on.

    Raises:
        PipelineError: no snapshot prefix or stub to publish to, or must_beat_published false.
    """
    parameters = config.parameters
    missing = [k for k in ("dataset_snapshot_prefix", "publish_stub") if not _given(parameters, k)]
    if missing:
        raise PipelineError(
            f"{config_path}: scheduled retraining needs {' and '.join(missing)} in parameters "
            "(the newest snapshot under the prefix is trained on; the result is published there)"
        )
    if _given(parameters, "must_beat_published") is False:
        raise PipelineError(
            f"{config_path}: must_beat_published is false, but a scheduled run publishes only "
            "when it beats the current zoo model; remove the key or set it to true"
        )
    if "advanced" in pipeline_parameters(get_pipeline(config.pipeline)):
        advanced = dict(parameters.get("advanced") or {}, must_beat_published=True)
        return dict(parameters, advanced=advanced)
    return dict(parameters, must_beat_published=True)


def _version_to_run(
    client: Any, pipeline: str, pipeline_name: str, version: str | None,
    namespace: str | None, package: str | Path | None,
) -> dict[str, str]:  # fmt: skip
    """The uploaded pipeline version a recurring run points at; uploads it when missing."""
    pipeline_id = _find_pipeline(client, pipeline_name, namespace)
    version_id = _find_version(client, pipeline_id, version) if pipeline_id else None
    if pipeline_id and version_id:
        return {"pipeline_id": pipeline_id, "version_id": version_id}
    return upload(
        client, pipeline, name=pipeline_name, version=version, namespace=namespace,
        package=package,
    )  # fmt: skip


def schedule(
    client: Any,
    config_path: str | Path,
    *,
    cron: str,
    experiment: str | None = None,
    name: str | None = None,
    namespace: str | None = None,
    pipeline_name: str | None = None,
    version: str | None = None,
    package: str | Path | None = None,
    pipeline_root: str | None = None,
    owner: str = "",
) -> str:
    """Creates or replaces the KFP recurring run `name` for scheduled retraining; returns its id.

    `owner` (e.g. a Helm release) is written into the recurring run's description, so
    `prune_schedules` can later find the runs that owner made and no others.

    The recurring run points at an uploaded pipeline version: `version` of `pipeline_name`
    (default: its newest version; the spec, `package` or a fresh compile, is uploaded when the
    pipeline or that version is missing), so it runs exactly what was uploaded, and a rerun
    (every ``helm upgrade``) replaces the recurring runs of that name in the experiment
    instead of adding one: KFP itself keeps no unique recurring-run names (model/job.go).

    The config must name `dataset_snapshot_prefix` (each run trains on the
    newest snapshot under it; flat or in ``trainer_flags``) and `publish_stub`;
    `must_beat_published` is forced on (in ``advanced``) so a run publishes only when it
    beats the model in the zoo.

    Caching: kfp's ``enable_caching`` does nothing for a recurring run that references a
    pipeline version (kfp/client/client.py ``_create_job_config`` applies it to a package's
    spec only), so it is not passed. Each run still re-lists the snapshots because the
    compiled spec never caches the fetch, training and publish steps (pipelines/_settings.py;
    KFP's cache key cannot see outside state, backend/src/v2/cacheutils/cache.go).
    """
    config = read_config(config_path)
    parameters = _retraining_parameters(config, config_path)
    cron_expression = to_kfp_cron(cron)  # a bad expression fails before any request
    check_backend(client)
    pipeline_name = pipeline_name or get_pipeline(config.pipeline).name
    ids = _version_to_run(client, config.pipeline, pipeline_name, version, namespace, package)
    experiment_obj = client.create_experiment(
        experiment or config.experiment or "sparse-transfer-retraining", namespace=namespace
    )
    job_name = name or config.run_name or f"{config.pipeline}-retraining"
    stale = client.list_recurring_runs(
        experiment_id=experiment_obj.experiment_id,
        namespace=namespace,
        filter=_equals("display_name", job_name),
        page_size=100,
    )
    job = client.create_recurring_run(
        experiment_id=experiment_obj.experiment_id,
        job_name=job_name,
        description=_owned(config.description, owner),
        cron_expression=cron_expression,
        max_concurrency=1,
        no_catchup=True,
        params=parameters,
        pipeline_id=ids["pipeline_id"],
        version_id=ids["version_id"],
        pipeline_root=pipeline_root,
    )
    for old in stale.recurring_runs or []:  # replaced only once the new one exists
        client.delete_recurring_run(old.recurring_run_id)
    return job.recurring_run_id


# ------------------------------------------------------------------ schedule ownership

OWNER_MARK = "[sparse-transfer owner: {}]"


def _owned(description: str | None, owner: str) -> str | None:
    if not owner:
        return description
    return " ".join(p for p in (description, OWNER_MARK.format(owner)) if p)


def prune_schedules(
    client: Any,
    *,
    owner: str,
    keep: tuple[str, ...] = (),
    experiment: str = "sparse-transfer-retraining",
    namespace: str | None = None,
) -> list[str]:
    """Deletes the recurring runs `owner` made in `experiment` whose name is not in `keep`.

    What a schedule that was disabled or removed from the chart's values, or a whole release
    that was uninstalled, leaves behind would otherwise keep training and publishing: KFP
    keeps recurring runs until they are deleted. Only runs carrying `owner`'s mark (written by
    `schedule(owner=...)`) are touched. Returns the deleted runs' names.
    """
    if not owner:
        raise PipelineError("prune-schedules needs --owner: only runs it made are deleted")
    check_backend(client)
    found = client.list_experiments(filter=_equals("display_name", experiment), namespace=namespace)
    deleted: list[str] = []
    for exp in found.experiments or []:
        runs = client.list_recurring_runs(
            experiment_id=exp.experiment_id, namespace=namespace, page_size=100
        )
        for run in runs.recurring_runs or []:
            mine = OWNER_MARK.format(owner) in (run.description or "")
            if mine and run.display_name not in keep:
                client.delete_recurring_run(run.recurring_run_id)
                deleted.append(run.display_name)
    return deleted
