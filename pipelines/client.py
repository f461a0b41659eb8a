"""Compile, run locally, upload, submit and schedule the pipelines (the kfp side of the CLI).

`sparse_transfer.cli.pipeline` parses arguments and imports this module lazily;
the library itself never imports kfp.
"""

from __future__ import annotations

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
    from pipelines.sparse_transfer_pipeline import sparse_transfer_pipeline

    return {"sparse_transfer": sparse_transfer_pipeline, "dense_teacher": dense_teacher_pipeline}


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


def _docker_runner():
    """kfp's DockerRunner set up for our image (and for podman's Docker API).

    Our image's entry point is `sparse-transfer`, but kfp passes `sh -c ...` as the
    command, so the entry point is reset to `/usr/bin/env`. Steps run as the
    calling user so they can write the host pipeline root that kfp mounts. Podman
    answers "no such container" with HTTP 500 instead of 404; kfp's cleanup expects
    NotFound, so that one answer is translated.
    """
    import docker.api.client
    import docker.errors
    from kfp import local

    original = docker.api.client.create_api_error_from_http_exception
    if not getattr(original, "_sparse_transfer_podman", False):

        def podman_not_found(exc):
            response = exc.response
            if (
                response is not None
                and response.status_code == 500
                and "no such container" in response.text
            ):
                raise docker.errors.NotFound(exc, response=response, explanation=response.text)
            return original(exc)

        podman_not_found._sparse_transfer_podman = True
        docker.api.client.create_api_error_from_http_exception = podman_not_found
    return local.DockerRunner(
        entrypoint=["/usr/bin/env"],
        user=f"{os.getuid()}:{os.getgid()}",
        network_mode="host",
    )


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

    The local runner ignores caching, retries, resources and Kubernetes
    settings: S3 credentials come from this process's environment.
    """
    from kfp import local
    from sparse_transfer.pipeline.config import validate_parameters

    config = read_config(config_path)
    pipeline = get_pipeline(config.pipeline)
    parameters = dict(config.parameters)
    if overrides:
        parameters.update(
            validate_parameters(
                overrides,
                pipeline_parameters(pipeline),
                source="overrides",
                pipeline=config.pipeline,
            )
        )
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
        chosen = _docker_runner()
    else:
        raise PipelineError(f"unknown local runner {runner!r}; use subprocess or docker")
    local.init(runner=chosen, pipeline_root=str(root), raise_on_error=True)
    try:
        task = pipeline(**parameters)
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


def make_client(
    host: str | None = None,
    *,
    token: str | None = None,
    sa_token_path: str | None = None,
    namespace: str | None = None,
    ssl_ca_cert: str | None = None,
    verify_ssl: bool | None = None,
) -> Any:
    """A `kfp.Client` with the authentication a KFP user expects, first match wins:

    1. a bearer token: `token` or ``$KF_PIPELINES_TOKEN`` (e.g. ``kubectl create token``,
       an OIDC/Dex id token);
    2. a service-account token file: `sa_token_path` or ``$KF_PIPELINES_SA_TOKEN_PATH``
       (projected volume, refreshed on every request);
    3. nothing: kfp's own defaults (in-cluster config when `host` is None and we
       run in a pod, else the kubeconfig's port-forward/proxy).
    """
    import kfp
    from kfp.client import ServiceAccountTokenVolumeCredentials

    token = token or os.environ.get(TOKEN_ENV) or None
    sa_token_path = sa_token_path or os.environ.get(SA_TOKEN_ENV) or None
    kwargs: dict[str, Any] = {"host": host, "ssl_ca_cert": ssl_ca_cert, "verify_ssl": verify_ssl}
    if namespace:
        kwargs["namespace"] = namespace
    if token:
        kwargs["existing_token"] = token
    elif sa_token_path:
        if not Path(sa_token_path).is_file():
            raise PipelineError(f"service-account token file {sa_token_path} does not exist")
        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path=sa_token_path)
    try:
        return kfp.Client(**kwargs)
    except Exception as exc:  # kfp raises bare exceptions for unreachable hosts
        raise PipelineError(
            f"cannot reach Kubeflow Pipelines at {host or 'in-cluster'}: {exc}"
        ) from exc


@contextmanager
def _package(name: str) -> Iterator[Path]:
    """A freshly compiled spec of pipeline `name` in a temp file.

    Compiling at submission (not reading pipelines/compiled/) honours
    ``SPARSE_TRANSFER_IMAGE`` and ``SPARSE_TRANSFER_S3_SECRET`` of this shell;
    with neither set it is byte-identical to the checked-in spec (a test checks).
    """
    from kfp import compiler

    pipeline = get_pipeline(name)
    with tempfile.TemporaryDirectory(prefix="sparse-transfer-spec-") as tmp:
        path = compiled_path(name, Path(tmp))
        compiler.Compiler().compile(pipeline, str(path))
        yield path


def upload(
    client: Any,
    pipeline: str = "sparse_transfer",
    *,
    name: str | None = None,
    version: str | None = None,
) -> dict[str, str]:
    """Uploads the compiled spec as a new pipeline, or as a new version of an existing one.

    Returns:
        ``pipeline_id`` and, for a new version, ``version_id``.
    """
    from sparse_transfer import __version__

    name = name or get_pipeline(pipeline).name
    existing = client.get_pipeline_id(name)
    with _package(pipeline) as path:
        if existing is None:
            created = client.upload_pipeline(
                str(path), pipeline_name=name, description=get_pipeline(pipeline).description
            )
            return {"pipeline_id": created.pipeline_id}
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
) -> str:
    """Creates one run from a run config; returns the run id."""
    config = read_config(config_path)
    with _package(config.pipeline) as path:
        run = client.create_run_from_pipeline_package(
            str(path),
            arguments=config.parameters,
            run_name=config.run_name or f"{config.pipeline}-{_stamp()}",
            experiment_name=experiment or config.experiment,
            namespace=namespace,
        )
    return run.run_id


def schedule(
    client: Any,
    config_path: str | Path,
    *,
    cron: str,
    experiment: str | None = None,
    name: str | None = None,
    namespace: str | None = None,
) -> str:
    """Creates a KFP recurring run for scheduled retraining; returns its id.

    The config must name `dataset_snapshot_prefix` (each run trains on the
    newest snapshot under it) and `publish_stub`; `must_beat_published` is
    forced on so a run publishes only when it beats the model in the zoo, and
    caching is off so each run re-lists the snapshots instead of reusing the
    first run's data.
    """
    config = read_config(config_path)
    missing = [
        k for k in ("dataset_snapshot_prefix", "publish_stub") if not config.parameters.get(k)
    ]
    if missing:
        raise PipelineError(
            f"{config_path}: scheduled retraining needs {' and '.join(missing)} in parameters "
            "(the newest snapshot under the prefix is trained on; the result is published there)"
        )
    if config.parameters.get("must_beat_published") is False:
        raise PipelineError(
            f"{config_path}: must_beat_published is false, but a scheduled run publishes only "
            "when it beats the current zoo model; remove the key or set it to true"
        )
    parameters = dict(config.parameters, must_beat_published=True)
    cron_expression = to_kfp_cron(cron)  # a bad expression fails before any request
    experiment_obj = client.create_experiment(
        experiment or config.experiment or "sparse-transfer-retraining", namespace=namespace
    )
    with _package(config.pipeline) as path:
        job = client.create_recurring_run(
            experiment_id=experiment_obj.experiment_id,
            job_name=name or config.run_name or f"{config.pipeline}-retraining",
            description=config.description,
            cron_expression=cron_expression,
            max_concurrency=1,
            no_catchup=True,
            params=parameters,
            pipeline_package_path=str(path),
            enable_caching=False,
        )
    return job.recurring_run_id
