"""A small KFP v2beta1 REST API on loopback that decides like KFP's API server does.

Follows kubeflow/pipelines **2.17.0** (the newest backend the project supports; the floor,
2.15.0, decides the same way). Each rule and where it comes from in KFP's source:

- Healthz: ``GET /apis/v2beta1/healthz`` answers ``commit_sha``, ``tag_name`` and
  ``multi_user`` (backend/src/apiserver/main.go, ``healthzResponse``).
- Authentication (multi-user only): a request that must be authorized and carries no identity is
  refused with 401 (resource/resource_manager.go ``IsAuthorized`` ->
  ``util.NewUnauthenticatedError``); an identity the cluster's RBAC denies gets 403 (the
  SubjectAccessReview result). Single-user mode skips both.
- Shared vs namespaced pipelines (server/pipeline_server.go ``canAccessPipeline``): a pipeline
  with an empty namespace is shared. Reading (get/list) a shared pipeline needs no authorization;
  creating one, or a version of one, is authorized against the KFP system namespace
  (``common.GetPodNamespace()``, ``kubeflow``) in 2.17.0 (2.5.0 skipped the check: shared
  pipelines were writable by everyone). A namespaced pipeline is authorized in its namespace.
  Uploading a version finds the namespace from the pipeline id
  (server/pipeline_upload_server.go ``canUploadVersionedPipeline``).
- Uniqueness (apiserver/model/*.go gorm indexes): pipeline names are unique per namespace
  (``namespace_name``), version names per pipeline (``idx_pipelineid_name``), experiment names per
  namespace (``idx_name_namespace``); a duplicate is 409 AlreadyExists. Recurring runs have *no*
  unique name (model/job.go ``DisplayName``): creating one twice makes two.
- Experiments in multi-user mode must name a namespace (server/experiment_server.go); runs and
  recurring runs live in their experiment's namespace and are authorized there.
- A recurring run may reference a pipeline version (``pipeline_version_reference``) instead of
  embedding a spec; the version must exist (404 otherwise).
- The driver's runtime-placeholder rule (backend/src/v2/driver/util.go
  ``resolvePodSpecInputRuntimeParameter`` in 2.5, resolve.go later; driver.go
  ``initPodSpecPatch``): a resource or accelerator field holding
  ``{{$.inputs.parameters['x']}}`` is resolved with ``GetStringValue()``, so a number-typed
  parameter resolves to "" and no limit is set. `driver_limits` reproduces that, and
  `runtime_fields_not_strings` lists every field that would be dropped.

Only what the project's client uses is served; anything else is a 404, so a new call shows up.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

SYSTEM_NAMESPACE = "kubeflow"
PLACEHOLDER = re.compile(r"^\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}$")
RUNTIME_FIELDS = (
    "resourceCpuLimit",
    "resourceCpuRequest",
    "resourceMemoryLimit",
    "resourceMemoryRequest",
)


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class KfpState:
    """What the server holds. `users`: bearer token -> (user, namespaces RBAC lets it write)."""

    multi_user: bool = False
    tag_name: str = "2.17.0"
    users: dict[str, tuple[str, set[str]]] = field(default_factory=dict)
    pipelines: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, dict] = field(default_factory=dict)
    experiments: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    recurring_runs: dict[str, dict] = field(default_factory=dict)
    seen: list[dict] = field(default_factory=list)  # method, path, authorization, cookie
    ids: Any = field(default_factory=itertools.count)
    lock: Any = field(default_factory=threading.Lock)

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self.ids)}"

    # ------------------------------------------------------------- authorization
    def authorize(self, token: str | None, namespace: str, verb: str) -> None:
        """pipeline_server.go canAccessPipeline + resource_manager.go IsAuthorized."""
        if not self.multi_user:
            return
        if namespace == "":
            if verb in ("get", "list"):
                return  # shared pipelines are readable by everyone
            namespace = SYSTEM_NAMESPACE
        if not token or token not in self.users:
            raise ApiError(401, "Failed to check authorization. User identity is empty")
        user, allowed = self.users[token]
        if namespace not in allowed:
            raise ApiError(
                403,
                f"PermissionDenied: user {user!r} cannot {verb} pipelines in namespace "
                f"{namespace!r}",
            )

    # ------------------------------------------------------------------ handlers
    def create_pipeline(self, token, body: dict) -> dict:
        """POST /apis/v2beta1/pipelines: a pipeline without a version yet."""
        name = body.get("name") or body.get("display_name") or ""
        namespace = body.get("namespace", "") if self.multi_user else ""
        return self._new_pipeline(token, name, namespace, body.get("description", ""))

    def upload_pipeline(self, token, query: dict, spec: str) -> dict:
        name = query.get("name") or query.get("display_name") or "pipeline"
        namespace = query.get("namespace", "") if self.multi_user else ""
        created = self._new_pipeline(token, name, namespace, query.get("description", ""))
        self._add_version(created["pipeline_id"], name, spec)
        return created

    def _new_pipeline(self, token, name: str, namespace: str, description: str) -> dict:
        if not name:
            raise ApiError(400, "InvalidArgument: pipeline name is empty")
        self.authorize(token, namespace, "create")
        if any(p["name"] == name and p["namespace"] == namespace for p in self.pipelines.values()):
            raise ApiError(409, f"AlreadyExists: pipeline name {name!r} in {namespace!r}")
        pid = self.new_id("pipeline")
        self.pipelines[pid] = {
            "pipeline_id": pid,
            "name": name,
            "display_name": name,
            "namespace": namespace,
            "description": description,
        }
        return dict(self.pipelines[pid])

    def upload_version(self, token, query: dict, spec: str) -> dict:
        pid = query.get("pipelineid", "")
        if pid not in self.pipelines:
            raise ApiError(404, f"NotFound: pipeline {pid!r}")
        self.authorize(token, self.pipelines[pid]["namespace"], "create")
        name = query.get("name") or "version"
        if any(v["name"] == name and v["pipeline_id"] == pid for v in self.versions.values()):
            raise ApiError(409, f"AlreadyExists: version {name!r} of pipeline {pid}")
        return self._add_version(pid, name, spec)

    def _add_version(self, pid: str, name: str, spec: str) -> dict:
        docs = [d for d in yaml.safe_load_all(spec) if d]
        if not docs or "root" not in docs[0]:
            raise ApiError(400, "InvalidArgument: not a pipeline spec")
        vid = self.new_id("version")
        self.versions[vid] = {
            "pipeline_id": pid,
            "pipeline_version_id": vid,
            "name": name,
            "display_name": name,
            "created_at": f"2026-01-01T00:00:{len(self.versions):02d}Z",
            "pipeline_spec": docs[0],
            "platform_spec": docs[1] if len(docs) > 1 else {},
        }
        return {k: v for k, v in self.versions[vid].items() if k != "platform_spec"}

    def list_pipelines(self, token, query: dict) -> dict:
        namespace = query.get("namespace", "") if self.multi_user else ""
        self.authorize(token, namespace, "list")
        found = [
            p
            for p in self.pipelines.values()
            if p["namespace"] == namespace and _matches(p, query.get("filter"))
        ]
        return {"pipelines": found, "total_size": len(found)} if found else {}

    def list_versions(self, token, pid: str, query: dict) -> dict:
        if pid not in self.pipelines:
            raise ApiError(404, f"NotFound: pipeline {pid!r}")
        self.authorize(token, self.pipelines[pid]["namespace"], "list")
        found = [
            {k: v for k, v in ver.items() if k != "platform_spec"}
            for ver in self.versions.values()
            if ver["pipeline_id"] == pid and _matches(ver, query.get("filter"))
        ]
        if query.get("sort_by") == "created_at desc":
            found.sort(key=lambda v: v["created_at"], reverse=True)
        found = found[: int(query.get("page_size") or 10)]
        return {"pipeline_versions": found, "total_size": len(found)} if found else {}

    def create_experiment(self, token, body: dict) -> dict:
        namespace = body.get("namespace", "") if self.multi_user else ""
        if self.multi_user and not namespace:
            raise ApiError(400, "InvalidArgument: experiment namespace is required in multi-user")
        self.authorize(token, namespace, "create")
        name = body["display_name"]
        if any(
            e["display_name"] == name and e["namespace"] == namespace
            for e in self.experiments.values()
        ):
            raise ApiError(409, f"AlreadyExists: experiment {name!r} in {namespace!r}")
        eid = self.new_id("experiment")
        self.experiments[eid] = {"experiment_id": eid, "display_name": name, "namespace": namespace}
        return dict(self.experiments[eid])

    def list_experiments(self, token, query: dict) -> dict:
        namespace = query.get("namespace", "") if self.multi_user else ""
        if self.multi_user:
            self.authorize(token, namespace or SYSTEM_NAMESPACE, "list")
        found = [
            e
            for e in self.experiments.values()
            if e["namespace"] == namespace and _matches(e, query.get("filter"))
        ]
        return {"experiments": found, "total_size": len(found)} if found else {}

    def _experiment(self, token, eid: str, verb: str) -> dict:
        if eid not in self.experiments:
            raise ApiError(404, f"NotFound: experiment {eid!r}")
        experiment = self.experiments[eid]
        if self.multi_user:
            self.authorize(token, experiment["namespace"] or SYSTEM_NAMESPACE, verb)
        return experiment

    def create_run(self, token, body: dict, kind: str) -> dict:
        experiment = self._experiment(token, body.get("experiment_id", ""), "create")
        ref = body.get("pipeline_version_reference")
        if ref:
            vid = ref.get("pipeline_version_id", "")
            if vid not in self.versions or self.versions[vid]["pipeline_id"] != ref.get(
                "pipeline_id"
            ):
                raise ApiError(404, f"NotFound: pipeline version {vid!r}")
        elif not body.get("pipeline_spec"):
            raise ApiError(400, "InvalidArgument: a run needs a pipeline spec or version")
        table, key = (
            (self.runs, "run_id") if kind == "run" else (self.recurring_runs, "recurring_run_id")
        )
        rid = self.new_id(kind)
        table[rid] = dict(body, **{key: rid, "namespace": experiment["namespace"]})
        return dict(table[rid])

    def list_recurring_runs(self, token, query: dict) -> dict:
        eid = query.get("experiment_id", "")
        namespace = query.get("namespace", "")
        if eid:
            namespace = self._experiment(token, eid, "list")["namespace"]
        elif self.multi_user:
            self.authorize(token, namespace or SYSTEM_NAMESPACE, "list")
        found = [
            r
            for r in self.recurring_runs.values()
            if (not eid or r["experiment_id"] == eid)
            and r["namespace"] == namespace
            and _matches(r, query.get("filter"))
        ]
        return {"recurringRuns": found, "total_size": len(found)} if found else {}

    def delete_recurring_run(self, token, rid: str) -> dict:
        if rid not in self.recurring_runs:
            raise ApiError(404, f"NotFound: recurring run {rid!r}")
        run = self.recurring_runs[rid]
        if self.multi_user:
            self.authorize(token, run["namespace"] or SYSTEM_NAMESPACE, "delete")
        del self.recurring_runs[rid]
        return {}

    # ------------------------------------------------------------ what ran where
    def pod_limits(self, run: dict, executor: str) -> dict[str, str]:
        """The accelerator limit the driver would set on `executor`'s pod in this run.

        Root parameters reach a task as ``pipelinechannel--<name>`` inputs; values are the
        run's runtime parameters (JSON as sent) over the spec's defaults.
        """
        spec, _ = self.spec_of(run)
        defaults = {
            name: p.get("defaultValue")
            for name, p in spec["root"].get("inputDefinitions", {}).get("parameters", {}).items()
        }
        given = {**defaults, **run.get("runtime_config", {}).get("parameters", {})}
        (task,) = [t for _, t, label in _tasks(spec) if label == executor]
        values = {}
        for name, source in task.get("inputs", {}).get("parameters", {}).items():
            if "componentInputParameter" in source:
                values[name] = given.get(source["componentInputParameter"])
            elif "runtimeValue" in source:
                values[name] = source["runtimeValue"].get("constant")
        return driver_limits(spec, executor, values)

    def spec_of(self, run: dict) -> tuple[dict, dict]:
        """(pipeline_spec, platform_spec) a run or recurring run executes."""
        ref = run.get("pipeline_version_reference")
        if ref:
            version = self.versions[ref["pipeline_version_id"]]
            return version["pipeline_spec"], version["platform_spec"]
        spec = run["pipeline_spec"]
        return spec.get("pipeline_spec", spec), spec.get("platform_spec", {})


def _matches(item: dict, filter_json: str | None) -> bool:
    """The EQUALS predicates kfp.Client sends (backend/api/v2beta1/filter.proto)."""
    if not filter_json:
        return True
    for predicate in json.loads(filter_json).get("predicates", []):
        value = predicate.get("stringValue", predicate.get("string_value"))
        if predicate.get("operation") not in ("EQUALS", 1) or item.get(predicate["key"]) != value:
            return False
    return True


def images(spec: dict) -> set[str]:
    return {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}


def _tasks(spec: dict):
    """(enclosing DAG's input parameter definitions, task, executor label) for every container
    task, in the root DAG and in sub-DAGs."""
    owners = [spec["root"], *(c for c in spec.get("components", {}).values() if "dag" in c)]
    for owner in owners:
        params = owner.get("inputDefinitions", {}).get("parameters", {})
        for task in owner["dag"]["tasks"].values():
            label = spec["components"][task["componentRef"]["name"]].get("executorLabel")
            if label:
                yield params, task, label


def _input_type(params: dict, task: dict, name: str) -> str | None:
    """The parameter type the task's input `name` carries at runtime."""
    source = task.get("inputs", {}).get("parameters", {}).get(name, {})
    if "componentInputParameter" in source:
        return params.get(source["componentInputParameter"], {}).get("parameterType")
    if "runtimeValue" in source:
        constant = source["runtimeValue"].get("constant")
        return "STRING" if isinstance(constant, str) else type(constant).__name__
    return None


def _runtime_fields(resources: dict) -> dict[str, str | None]:
    fields = {f: resources.get(f) for f in RUNTIME_FIELDS}
    accelerator = resources.get("accelerator", {})
    fields["accelerator.resourceType"] = accelerator.get("resourceType")
    fields["accelerator.resourceCount"] = accelerator.get("resourceCount")
    return fields


def runtime_fields_not_strings(spec: dict) -> list[str]:
    """Every runtime-resolved resource/accelerator field the driver would read as ""."""
    bad = []
    for params, task, label in _tasks(spec):
        executor = spec["deploymentSpec"]["executors"][label]
        for name, value in _runtime_fields(executor["container"].get("resources", {})).items():
            match = PLACEHOLDER.match(value or "")
            if match:
                kind = _input_type(params, task, match.group(1))
                if kind != "STRING":
                    bad.append(f"{label}.{name} <- {match.group(1)} ({kind})")
    return bad


def driver_limits(spec: dict, executor: str, values: dict[str, Any]) -> dict[str, str]:
    """The accelerator limit KFP's driver puts on the pod, given the task's input values.

    A value the driver reads with GetStringValue(): a JSON number is not a string, so "".
    """
    accelerator = spec["deploymentSpec"]["executors"][executor]["container"]["resources"].get(
        "accelerator", {}
    )

    def resolve(raw: str | None) -> str:
        match = PLACEHOLDER.match(raw or "")
        if not match:
            return raw or ""
        value = values.get(match.group(1))
        return value if isinstance(value, str) else ""

    kind = resolve(accelerator.get("resourceType")) or accelerator.get("type", "")
    count = resolve(accelerator.get("resourceCount"))
    if not count and accelerator.get("count"):
        count = str(accelerator["count"])
    return {kind: count} if kind and count else {}


class _Handler(BaseHTTPRequestHandler):
    state: KfpState

    def log_message(self, *args):
        pass

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        s, path, method = self.state, url.path, self.command
        s.seen.append(
            {
                "method": method,
                "path": path,
                "authorization": auth,
                "cookie": self.headers.get("Cookie", ""),
            }
        )
        try:
            with s.lock:
                if path == "/apis/v2beta1/healthz":
                    out = {"commit_sha": "fake", "tag_name": s.tag_name, "multi_user": s.multi_user}
                elif method == "POST" and path == "/apis/v2beta1/pipelines/upload":
                    out = s.upload_pipeline(token, query, self._upload(raw))
                elif method == "POST" and path == "/apis/v2beta1/pipelines/upload_version":
                    out = s.upload_version(token, query, self._upload(raw))
                elif method == "POST" and path == "/apis/v2beta1/pipelines":
                    out = s.create_pipeline(token, json.loads(raw))
                elif method == "GET" and path == "/apis/v2beta1/pipelines":
                    out = s.list_pipelines(token, query)
                elif method == "GET" and re.fullmatch(
                    r"/apis/v2beta1/pipelines/[^/]+/versions", path
                ):
                    out = s.list_versions(token, path.split("/")[4], query)
                elif method == "POST" and path == "/apis/v2beta1/experiments":
                    out = s.create_experiment(token, json.loads(raw))
                elif method == "GET" and path == "/apis/v2beta1/experiments":
                    out = s.list_experiments(token, query)
                elif method == "POST" and path == "/apis/v2beta1/runs":
                    out = s.create_run(token, json.loads(raw), "run")
                elif method == "POST" and path == "/apis/v2beta1/recurringruns":
                    out = s.create_run(token, json.loads(raw), "recurring")
                elif method == "GET" and path == "/apis/v2beta1/recurringruns":
                    out = s.list_recurring_runs(token, query)
                elif method == "DELETE" and path.startswith("/apis/v2beta1/recurringruns/"):
                    out = s.delete_recurring_run(token, path.rsplit("/", 1)[1])
                else:
                    raise ApiError(404, f"fake KFP does not serve {method} {path}")
        except ApiError as exc:
            return self._send(exc.status, {"error": str(exc), "message": str(exc)})
        self._send(200, out)

    def _upload(self, raw: bytes) -> str:
        content_type = self.headers.get("Content-Type", "")
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
        )
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "uploadfile":
                return part.get_payload(decode=True).decode()
        raise ApiError(400, "InvalidArgument: multipart field 'uploadfile' missing")

    do_GET = do_POST = do_DELETE = _dispatch


class FakeKfp:
    """``with FakeKfp(multi_user=True, users={...}) as kfp: kfp.url, kfp.state``."""

    def __init__(self, **state: Any):
        self.state = KfpState(**state)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> FakeKfp:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
