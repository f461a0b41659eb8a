"""Request bodies -> instances, predictions -> response bodies (v1 and Open Inference v2).

v1 (``POST /v1/models/{name}:predict``): ``{"instances": [<instance>, ...]}`` ->
``{"predictions": [<prediction>, ...]}``; an instance is an object with the task's
fields (a bare string stands for ``{"text": ...}``).

v2 (``POST /v2/models/{name}/infer``): one ``BYTES`` input per field, each of shape
``[N]`` (or ``[N, 1]``), holding UTF-8 strings; the response carries a ``prediction``
output (``BYTES [N]``, one JSON object per instance, the v1 prediction) and the
task's typed outputs (`TaskSpec.served_outputs`) for clients that want plain tensors.
"""

from __future__ import annotations

import json
from typing import Any

from sparse_transfer.serving.codecs import InputError


def v1_instances(payload: Any) -> list[Any]:
    if isinstance(payload, (bytes, bytearray, str)):
        raise InputError(
            'the body is not JSON: send Content-Type: application/json with {"instances": [...]}'
        )
    if not isinstance(payload, dict):
        raise InputError(
            f'expected a JSON object {{"instances": [...]}}, got {type(payload).__name__}'
        )
    if "instances" not in payload:
        raise InputError(
            f'missing field "instances" (got {", ".join(map(repr, sorted(payload))) or "no fields"})'
        )
    return payload["instances"]


def v2_instances(request, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """An `InferRequest`'s BYTES inputs -> one dict per row."""
    columns: dict[str, list[Any]] = {}
    for tensor in request.inputs:
        if tensor.name not in fields:
            raise InputError(f"input {tensor.name!r} is not accepted; inputs: {', '.join(fields)}")
        if tensor.name in columns:  # a dict would silently keep the last one
            raise InputError(f"input {tensor.name!r} is given twice; send each input once")
        if tensor.datatype != "BYTES":
            raise InputError(
                f"input {tensor.name!r} has datatype {tensor.datatype}; send BYTES (strings)"
            )
        shape = list(tensor.shape)
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise InputError(f"input {tensor.name!r} has shape {shape}; expected [N] or [N, 1]")
        data = tensor.data
        if hasattr(data, "tolist"):
            data = data.tolist()
        flat = [row[0] if isinstance(row, list) and len(row) == 1 else row for row in data]
        values = [v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else v for v in flat]
        if len(values) != shape[0]:
            raise InputError(
                f"input {tensor.name!r} declares shape {shape} but holds {len(values)} values"
            )
        columns[tensor.name] = values
    if not columns:
        raise InputError(f"no inputs: send one BYTES input per field ({', '.join(fields)})")
    sizes = {name: len(v) for name, v in columns.items()}
    if len(set(sizes.values())) != 1:
        raise InputError(f"inputs have different lengths: {sizes}")
    n = next(iter(sizes.values()))
    return [{name: columns[name][i] for name in columns} for i in range(n)]


def v2_outputs(
    typed_outputs: tuple[tuple[str, str], ...], predictions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """(name, datatype, shape, data) of every v2 output for `predictions`.

    `typed_outputs` are the task's ``(prediction key, datatype)`` pairs
    (`TaskSpec.served_outputs`); lists and objects travel as JSON strings."""
    n = len(predictions)
    outputs = [
        {
            "name": "prediction",
            "datatype": "BYTES",
            "shape": [n],
            "data": [json.dumps(p, sort_keys=True) for p in predictions],
        }
    ]
    for key, datatype in typed_outputs:
        if not all(key in p for p in predictions):
            continue
        values = [p[key] for p in predictions]
        if datatype == "BYTES":
            values = [v if isinstance(v, str) else json.dumps(v) for v in values]
        outputs.append({"name": key, "datatype": datatype, "shape": [n], "data": values})
    return outputs
