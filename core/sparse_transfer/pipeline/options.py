"""Training flags of a pipeline run: checked once, up front, then handed to every training step.

The pipeline exposes the reference command lines' flags as parameters with
the reference's defaults; `training_options` validates them (before any model
is fetched), drops the ones that mean "unset", drops task-only flags for other
tasks and renames to the flag names the installed transformers reads.
`configure_run` adds the checks across fields and steps (lengths, the gate
metric, the recipe's windows against the training window, the data files'
first rows against the task), so a run that could only fail later fails in
its first step with one line naming the flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sparse_transfer.errors import PipelineError
from sparse_transfer.tasks.flags import (
    DATA_FLAGS,
    FLAGS,
    TRAINING_FLAGS,
    applies_to,
    as_int,
    check_value,
    is_unset,
)
from sparse_transfer.tasks.names import TEXT_CLASSIFICATION

# name -> type; the pipeline parameters that become train/evaluate flags (from the one schema).
TRAINING_OPTIONS: dict[str, type] = {f.name: f.type for f in TRAINING_FLAGS}
_SCHEMA = {f.name: f for f in TRAINING_FLAGS}
# What an evaluation needs of the training flags.
EVAL_KEYS = ("max_seq_length", "doc_stride", "per_device_eval_batch_size", "max_eval_samples")


def training_options(task: str, **values: Any) -> dict[str, Any]:
    """Validates and normalises training flags.

    Args:
        task: the task (decides which task-only flags apply and the length defaults).
        **values: flag -> value; names must be in `TRAINING_OPTIONS`.

    Returns:
        flag -> value for `sparse_transfer.pipeline.steps.train_step`.

    Raises:
        PipelineError: listing every unknown, mistyped or out-of-range flag, or a
            ``doc_stride`` not below ``max_seq_length`` (after the task's defaults).
    """
    from sparse_transfer.tasks.lengths import resolve_lengths
    from sparse_transfer.tasks.registry import get_task

    spec = get_task(task)
    errors: list[str] = []
    out: dict[str, Any] = {}
    for name, value in values.items():
        flag = _SCHEMA.get(name)
        if flag is None:
            errors.append(f"unknown training option '{name}'; known: {', '.join(TRAINING_OPTIONS)}")
            continue
        value = as_int(value) if flag.type is int else value
        problem = check_value(flag, value)
        if problem:
            errors.append(f"training option '{name}' {problem}")
            continue
        if applies_to(flag, spec) and not is_unset(flag, value):
            out[flag.hf_name or name] = value
    if out.get("eval_strategy") == "steps" and "eval_steps" not in out:
        errors.append("evaluation_strategy 'steps' needs eval_steps > 0")
    if errors:
        raise PipelineError("bad training options:\n" + "\n".join(errors))
    resolve_lengths(
        spec, out.get("max_seq_length"), out.get("doc_stride"), error=PipelineError,
        spelling="parameter ",
    )  # fmt: skip
    return out


def check_trainer_flags(trainer_flags: Any) -> dict[str, Any]:
    """The run form's ``trainer_flags`` JSON object: every key a schema flag, every value valid.

    The rarely changed data/training flags travel in this one pipeline parameter so the
    form stays short; they are checked by the same schema as the flat flags.

    Raises:
        PipelineError: one line naming the first unknown key or bad value.
    """
    if not isinstance(trainer_flags, Mapping):
        raise PipelineError(
            f"parameter trainer_flags must be a JSON object, got {type(trainer_flags).__name__}"
        )
    out: dict[str, Any] = {}
    for name, value in trainer_flags.items():
        spec = FLAGS.get(name)
        if spec is None:
            raise PipelineError(f"trainer_flags: unknown key {name!r}; known: {', '.join(FLAGS)}")
        problem = check_value(spec, value)
        if problem:
            raise PipelineError(f"trainer_flags.{name} {problem}")
        out[name] = as_int(value) if spec.type is int else value
    return out


def with_trainer_flags(values: Mapping[str, Any], trainer_flags: Any, kind: str) -> dict[str, Any]:
    """`values` (a step's flat flags) with the ``trainer_flags`` of one `kind` laid over them.

    Args:
        values: flag -> value as the step received them.
        trainer_flags: the run form's JSON object (checked by `check_trainer_flags`).
        kind: ``"data"`` or ``"training"``: which schema flags this step takes.
    """
    names = {f.name for f in (DATA_FLAGS if kind == "data" else TRAINING_FLAGS)}
    extra = check_trainer_flags(trainer_flags or {})
    return {**values, **{k: v for k, v in extra.items() if k in names}}


def eval_options(training_args: dict[str, Any]) -> dict[str, Any]:
    """The subset of validated training flags an evaluation uses."""
    return {k: v for k, v in training_args.items() if k in EVAL_KEYS}


def check_gate_metric(task: str, gate_metric: str) -> None:
    """A gate metric the task never reports is refused now, not after training.

    Raises:
        PipelineError: one line naming the parameter and the task's metrics.
    """
    from sparse_transfer.tasks.registry import get_task

    spec = get_task(task)
    if gate_metric and not spec.reports_metric(gate_metric):
        raise PipelineError(
            f"parameter gate_metric {gate_metric!r} is not a metric of {spec.name}; "
            f"available: {spec.describe_metrics()}"
        )


def configure_run(
    task: str,
    *,
    gate_metric: str = "",
    recipe: str = "",
    recipe_args: str = "",
    zoo: str = "",
    allow_inert_modifiers: bool = False,
    trainer_flags: Mapping[str, Any] | None = None,
    advanced: Mapping[str, Any] | None = None,
    pipeline: str = "",
    data: dict[str, str] | None = None,
    **flags: Any,
) -> dict[str, Any]:
    """The pipeline's configure step: `training_options`, the checks that need no data, then
    the task's data checks on the first rows of the data files (`data_check`).

    Args:
        task: the task.
        gate_metric: the gate's metric ("" = the task's headline metric).
        recipe / recipe_args: the sparse transfer recipe and its overrides ("" = not checked).
        zoo: zoo root for a recipe stub.
        allow_inert_modifiers: run even when a modifier's window lies outside the training
            window (it would never act); otherwise that is refused here.
        trainer_flags: the run form's JSON object of further flags (`check_trainer_flags`);
            they win over `flags`.
        advanced: the run form's JSON object of step settings
            (`sparse_transfer.pipeline.settings`), checked against `pipeline`'s keys; its
            ``allow_inert_modifiers`` wins over the flat one.
        pipeline: the pipeline's name in run configs ("": any setting is accepted).
        data: the data flags (``task_name``, ``train_file``, ``validation_file``, the column
            flags, ...; see `data_check.check_data_head`), with `trainer_flags`' data flags laid
            over them; None: the data is not looked at.
        **flags: the training flags.

    Returns:
        The validated training flags (as `training_options`).
    """
    from sparse_transfer.pipeline.settings import check_settings, run_settings, settings_keys

    check_settings(advanced or {}, settings_keys(pipeline))
    settings = run_settings(advanced, allow_inert_modifiers=allow_inert_modifiers)
    allow_inert_modifiers = settings.allow_inert_modifiers
    if settings.unlabeled_file and task != TEXT_CLASSIFICATION:
        raise PipelineError(
            f"advanced.unlabeled_file: teacher labels are for {TEXT_CLASSIFICATION} runs, "
            f"not {task}; remove it"
        )
    out = training_options(task, **with_trainer_flags(flags, trainer_flags, "training"))
    check_gate_metric(task, gate_metric)
    if recipe:
        from sparse_transfer.tasks.recipe_fit import inert_modifier_warnings

        warnings = inert_modifier_warnings(recipe, recipe_args, zoo=zoo or None)
        if warnings and not allow_inert_modifiers:
            raise PipelineError(
                f"recipe {recipe}: {warnings[0]} (set allow_inert_modifiers to run anyway)"
            )
    if data:
        from sparse_transfer.pipeline.data_check import DATA_CHECK_FLAGS, check_data_head

        data = {k: v for k, v in with_trainer_flags(data, trainer_flags, "data").items()
                if k in DATA_CHECK_FLAGS}  # fmt: skip
        limits = {k: out[k] for k in ("max_train_samples", "max_eval_samples") if k in out}
        check_data_head(task, **data, **limits)
    return out
