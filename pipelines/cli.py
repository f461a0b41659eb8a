"""`sparse-transfer pipeline compile|run|submit|upload|schedule`: Kubeflow Pipelines from the command line.

Lives on the kfp side and reaches the `sparse-transfer` command as a plugin: pyproject.toml
declares ``register`` in the ``sparse_transfer.cli_plugins`` entry-point group, which
`sparse_transfer.cli` reads, so the library never imports this package. Handlers import
`pipelines.client` (and with it kfp) lazily, so ``sparse-transfer --help`` stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any


def _auth_options(parser: argparse.ArgumentParser, host_required: bool = False) -> None:
    group = parser.add_argument_group("Kubeflow Pipelines connection")
    group.add_argument(
        "--host",
        required=host_required,
        default=None,
        help="KFP API endpoint, e.g. http://localhost:8080 (default: $KF_PIPELINES_ENDPOINT, "
        "else in-cluster or the kubeconfig)",
    )
    group.add_argument(
        "--token",
        default=None,
        help="bearer token (default: $KF_PIPELINES_TOKEN); prefer the variable, "
        "command lines end up in shell history",
    )
    group.add_argument(
        "--sa-token-path",
        default=None,
        help="service-account token file, re-read on every request "
        "(default: $KF_PIPELINES_SA_TOKEN_PATH)",
    )
    group.add_argument(
        "--cookie",
        default=None,
        help="session cookie, e.g. 'authservice_session=...' for Kubeflow behind a login page "
        "(default: $KF_PIPELINES_COOKIE)",
    )
    group.add_argument(
        "--namespace",
        default=None,
        help="profile namespace (multi-user KFP): pipelines, experiments and runs are made there",
    )
    group.add_argument("--ssl-ca-cert", default=None, help="CA bundle for a private TLS endpoint")


def _spec_options(parser: argparse.ArgumentParser, root: bool = True) -> None:
    parser.add_argument(
        "--package",
        default=None,
        metavar="SPEC.yaml",
        help="send this compiled spec (e.g. the Helm chart's, with its image) instead of "
        "compiling one now",
    )
    if root:
        parser.add_argument(
            "--pipeline-root",
            default=None,
            help="where the run's artifacts go, e.g. s3://bucket/pipeline-root (default: the "
            "namespace's kfp-launcher defaultPipelineRoot)",
        )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``sparse-transfer pipeline SUBCOMMAND`` (the ``sparse_transfer.cli_plugins`` hook)."""
    parser = subparsers.add_parser(
        "pipeline", help="Compile, run and schedule the Kubeflow pipelines."
    )
    sub = parser.add_subparsers(dest="pipeline_command", required=True, metavar="SUBCOMMAND")
    for add in (_add_compile, _add_run, _add_submit, _add_upload, _add_schedule, _add_prune):
        add(sub)


def _add_compile(sub: argparse._SubParsersAction) -> None:
    compile_ = sub.add_parser(
        "compile",
        help="Regenerate pipelines/compiled/*.yaml (and the Helm chart's copy).",
        description="Compiles every pipeline. The image comes from $SPARSE_TRANSFER_IMAGE "
        "(default ghcr.io/sparse-transfer/sparse-transfer:0.1.0), the S3 Secret name from "
        "$SPARSE_TRANSFER_S3_SECRET (default sparse-transfer-s3).",
    )
    compile_.add_argument("--output-dir", default=None, help="default: pipelines/compiled")
    compile_.add_argument("--no-chart-copy", action="store_true", help="skip the chart's copy")
    compile_.set_defaults(handler=compile_command)


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run",
        help="Run a pipeline from a run config: --local (kfp's local runner) or on a cluster.",
        description="With --local, runs the whole DAG on this machine with kfp's local runner "
        "and prints where the report and artifacts are; with --host, same as `submit`.",
    )
    run.add_argument("config", metavar="CONFIG.yaml", help="run config file")
    run.add_argument("--local", action="store_true", help="run on this machine, no cluster")
    run.add_argument(
        "--runner",
        choices=("subprocess", "docker"),
        default="subprocess",
        help="local runner: this Python environment, or the pipeline image via $DOCKER_HOST",
    )
    run.add_argument("--pipeline-root", default=None, help="where local artifacts go")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one parameter (VALUE read as YAML: 3, true, text); repeatable; a flag "
        "or setting off the run form (fp16, publish_force) goes into trainer_flags/advanced",
    )
    run.add_argument("--experiment", default=None, help="KFP experiment (cluster runs)")
    _auth_options(run)
    run.set_defaults(handler=run_command)


def _add_submit(sub: argparse._SubParsersAction) -> None:
    submit = sub.add_parser("submit", help="Create one run on a KFP cluster from a run config.")
    submit.add_argument("config", metavar="CONFIG.yaml")
    submit.add_argument("--experiment", default=None, help="experiment name (created if missing)")
    _spec_options(submit)
    _auth_options(submit)
    submit.set_defaults(handler=submit_command)


def _add_upload(sub: argparse._SubParsersAction) -> None:
    upload = sub.add_parser(
        "upload", help="Upload the compiled pipeline (a new version when it already exists)."
    )
    upload.add_argument(
        "--pipeline",
        default="sparse_transfer",
        choices=("sparse_transfer", "dense_teacher", "sparse_upstream", "frontier"),
    )
    upload.add_argument("--name", default=None, help="pipeline name in KFP")
    upload.add_argument(
        "--version",
        default=None,
        help="version name (default: timestamped); an existing version of that name is kept",
    )
    _spec_options(upload, root=False)
    _auth_options(upload)
    upload.set_defaults(handler=upload_command)


def _add_schedule(sub: argparse._SubParsersAction) -> None:
    schedule = sub.add_parser(
        "schedule",
        help="Create a recurring run: retrain on the newest data snapshot, publish if better.",
    )
    schedule.add_argument("config", metavar="CONFIG.yaml")
    schedule.add_argument(
        "--cron", required=True, help="5-field cron, e.g. '0 3 * * 1' (Mondays 03:00)"
    )
    schedule.add_argument(
        "--name", default=None, help="recurring run name; one of that name is replaced"
    )
    schedule.add_argument("--experiment", default=None)
    schedule.add_argument(
        "--pipeline-name", default=None, help="uploaded pipeline to run (default: its own name)"
    )
    schedule.add_argument(
        "--version", default=None, help="pipeline version to run (default: the newest)"
    )
    schedule.add_argument(
        "--owner", default="", help="mark the run as this owner's (e.g. helm/NAMESPACE/RELEASE) "
        "so prune-schedules can remove it later",
    )  # fmt: skip
    _spec_options(schedule)
    _auth_options(schedule)
    schedule.set_defaults(handler=schedule_command)


def _add_prune(sub: argparse._SubParsersAction) -> None:
    prune = sub.add_parser(
        "prune-schedules",
        help="Delete the recurring runs an owner made, except those named with --keep.",
    )
    prune.add_argument("--owner", required=True, help="as given to `schedule --owner`")
    prune.add_argument("--keep", action="append", default=[], help="a run name to keep")
    prune.add_argument("--experiment", default="sparse-transfer-retraining")
    _auth_options(prune)
    prune.set_defaults(handler=prune_command)


def _client(args: argparse.Namespace) -> Any:
    from pipelines.client import make_client

    return make_client(
        args.host,
        token=args.token,
        sa_token_path=args.sa_token_path,
        namespace=args.namespace,
        ssl_ca_cert=args.ssl_ca_cert,
        cookies=args.cookie,
    )


def _api_errors(handler):
    """Turns a refusal of the KFP API (401, 403, 409, ...) into a one-line error, exit code 2."""
    import functools

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        from kfp_server_api.exceptions import ApiException

        from sparse_transfer.errors import PipelineError

        try:
            return handler(args)
        except ApiException as exc:
            detail = (exc.body or "").strip().replace("\n", " ")[:300]
            raise PipelineError(
                f"the KFP API at {args.host or 'in-cluster'} refused: HTTP {exc.status} "
                f"{exc.reason}: {detail}"
            ) from None

    return wrapped


def _overrides(pairs: list[str]) -> dict[str, Any]:
    from sparse_transfer import safe_yaml
    from sparse_transfer.errors import PipelineError

    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise PipelineError(f"--set expects NAME=VALUE, got {pair!r}")
        source = f"--set {name}"
        out[name] = safe_yaml.load(value, source, error=PipelineError) if value else ""
    return out


def compile_command(args: argparse.Namespace) -> int:
    from pipelines import client

    written = client.compile_pipelines(
        args.output_dir or client.COMPILED_DIR,
        # Installed from a wheel there is no chart folder beside the package: nothing to copy.
        chart_copy=None
        if args.no_chart_copy or not client.CHART_COPY.parent.is_dir()
        else client.CHART_COPY,
    )
    for path in written:
        print(f"wrote {path}")
    return 0


def run_command(args: argparse.Namespace) -> int:
    from sparse_transfer.errors import PipelineError

    if not args.local:
        if not args.host:
            raise PipelineError(
                "pipeline run needs --local (this machine) or --host URL (a cluster)"
            )
        return submit_command(args)
    from pipelines.client import run_local

    result = run_local(
        args.config,
        runner=args.runner,
        pipeline_root=args.pipeline_root,
        overrides=_overrides(args.set),
    )
    print(f"artifacts: {result.pipeline_root}")
    if result.report is not None:
        print(f"report:    {result.report}")
    gate = {True: "passed", False: "blocked", None: "n/a"}[result.passed]
    print(f"gate:      {gate}")
    print(f"published: {result.published or '(nothing)'}")
    return 0


@_api_errors
def submit_command(args: argparse.Namespace) -> int:
    from pipelines.client import submit

    run_id = submit(
        _client(args),
        args.config,
        experiment=args.experiment,
        namespace=args.namespace,
        package=getattr(args, "package", None),
        pipeline_root=getattr(args, "pipeline_root", None),
        overrides=_overrides(getattr(args, "set", [])),  # `run --host` takes --set too
    )
    print(f"run created: {run_id}")
    return 0


@_api_errors
def upload_command(args: argparse.Namespace) -> int:
    from pipelines.client import check_backend, upload

    client = _client(args)
    check_backend(client)
    ids = upload(
        client,
        args.pipeline,
        name=args.name,
        version=args.version,
        namespace=args.namespace,
        package=args.package,
    )
    print(" ".join(f"{k}={v}" for k, v in ids.items()))
    return 0


@_api_errors
def schedule_command(args: argparse.Namespace) -> int:
    from pipelines.client import schedule

    job_id = schedule(
        _client(args),
        args.config,
        cron=args.cron,
        experiment=args.experiment,
        name=args.name,
        namespace=args.namespace,
        pipeline_name=args.pipeline_name,
        version=args.version,
        package=args.package,
        pipeline_root=args.pipeline_root,
        owner=args.owner,
    )
    print(f"recurring run created: {job_id}")
    return 0


@_api_errors
def prune_command(args: argparse.Namespace) -> int:
    from pipelines.client import prune_schedules

    deleted = prune_schedules(
        _client(args), owner=args.owner, keep=tuple(args.keep), experiment=args.experiment,
        namespace=args.namespace,
    )  # fmt: skip
    print(f"recurring runs deleted: {', '.join(deleted) or '(none)'}")
    return 0
