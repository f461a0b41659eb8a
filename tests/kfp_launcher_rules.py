"""KFP's launcher reading its `providers` config for an ``s3://`` pipeline root.

A Python rendition of ``S3ProviderConfig.ProvideSessionInfo`` in kubeflow/pipelines
``backend/src/v2/config/s3.go`` (identical in tags 2.5.0, 2.15.0 and 2.17.0; the root DAG's
driver calls it through ``Config.GetStoreSessionInfo`` in ``backend/src/v2/config/env.go``,
``driver/root_dag.go``). The config is YAML turned into JSON and read by Go's encoding/json,
whose field names match case-insensitively (``Overrides`` is tagged ``json:"Overrides"``).
"""

from __future__ import annotations

from typing import Any


class LauncherConfigError(Exception):
    """What the launcher's ``invalid provider config`` error says."""


def _field(obj: dict, name: str) -> Any:
    """encoding/json: an exact match first, else a case-insensitive one."""
    if name in obj:
        return obj[name]
    return next((v for k, v in obj.items() if k.lower() == name.lower()), None)


def _bucket_and_prefix(path: str) -> tuple[str, str]:
    # objectstore.ParseBucketPathToConfig: s3://bucket/prefix...
    rest = path.split("://", 1)[1]
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix


def s3_session_info(providers: dict | None, path: str) -> dict[str, str]:
    """The session parameters the launcher would use for `path`, or LauncherConfigError."""
    s3 = _field(providers or {}, "s3") or {}
    default, overrides = _field(s3, "default"), _field(s3, "overrides")
    if default is None and overrides is None:
        return {"fromEnv": "true"}
    if default is None or _field(default, "credentials") is None:
        raise LauncherConfigError("invalid provider config: missing default credentials")
    params = {
        "endpoint": _field(default, "endpoint") or "",
        "region": _field(default, "region") or "",
        "secretName": "",
    }
    credentials = _field(default, "credentials")
    if not _field(credentials, "fromEnv"):
        params["secretName"] = _field(_field(credentials, "secretRef"), "secretName")
    bucket, prefix = _bucket_and_prefix(path)
    for override in overrides or []:
        if _field(override, "bucketName") == bucket and prefix.startswith(
            _field(override, "keyPrefix") or ""
        ):
            if _field(override, "credentials") is None:
                raise LauncherConfigError("invalid provider config: missing override credentials")
            for key in ("endpoint", "region"):
                params[key] = _field(override, key) or params[key]
            ref = _field(_field(override, "credentials"), "secretRef")
            if ref is None and not _field(_field(override, "credentials"), "fromEnv"):
                raise LauncherConfigError("invalid provider config: missing override secretref")
            params["secretName"] = _field(ref or {}, "secretName") or ""
            break
    return params
