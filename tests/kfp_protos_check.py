"""Reads compiled specs the way one KFP release's backend does, with that release's protos.

Run alone (``python -S tests/kfp_protos_check.py SPEC_DIR K8S_PB2 < specs.json``) so only the
release's own wheels (and the protobuf they pinned) are imported. Prints one JSON object:

- ``strict``: errors of the API server's strict parse of PipelineSpec and PlatformSpec
  (protojson.Unmarshal, which rejects unknown fields: backend/src/apiserver/template/
  v2_template.go, NewV2SpecTemplate);
- ``dropped``: every executor-config field the driver silently drops (it parses
  KubernetesExecutorConfig with AllowUnknownFields: backend/src/common/util/json.go
  UnmarshalString, called from backend/src/v2/cmd/driver/main.go), as ``path=value``.
"""

import importlib.util
import json
import sys


def _load_k8s(path):
    # kfp/kubernetes/__init__.py imports the whole SDK; only its generated proto module is loaded.
    found = importlib.util.spec_from_file_location("k8s_pb2", path)
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module


def _dropped(original, kept, path):
    """Fields in `original` that did not survive the lenient parse (`kept`)."""
    if isinstance(original, dict):
        kept = kept if isinstance(kept, dict) else {}
        out = []
        for key, value in original.items():
            if key not in kept:
                out.append(f"{path}.{key}={json.dumps(value, sort_keys=True)}")
            else:
                out += _dropped(value, kept[key], f"{path}.{key}")
        return out
    if isinstance(original, list):
        kept = kept if isinstance(kept, list) else []
        out = []
        for i, value in enumerate(original):
            out += _dropped(value, kept[i] if i < len(kept) else None, f"{path}[{i}]")
        return out
    return []


def main():
    sys.path[:0] = [sys.argv[1]]
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    k8s = _load_k8s(sys.argv[2])
    report = {"strict": [], "dropped": []}
    for name, (pipeline_spec, platform_spec) in json.load(sys.stdin).items():
        for doc, message in ((pipeline_spec, pipeline_spec_pb2.PipelineSpec()),
                             (platform_spec, pipeline_spec_pb2.PlatformSpec())):  # fmt: skip
            try:
                json_format.ParseDict(doc, message)
            except json_format.ParseError as exc:
                report["strict"].append(f"{name}: {exc}")
        executors = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        for executor, config in executors.items():
            message = json_format.ParseDict(
                config, k8s.KubernetesExecutorConfig(), ignore_unknown_fields=True
            )
            kept = (
                json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
                if "always_print_fields_with_no_presence"
                in json_format.MessageToDict.__code__.co_varnames
                else json_format.MessageToDict(message, including_default_value_fields=True)
            )
            report["dropped"] += _dropped(config, kept, f"{name}:{executor}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
