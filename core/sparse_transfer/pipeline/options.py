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

from typing import Any

from sparse_transfer.errors import PipelineError
from sparse_transfer.tasks.flags import TRAINING_FLAGS, applies_to, as_int, check_value, is_unset

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
        data: the data flags (``task_name``, ``train_file``, ``validation_file``, the column
            flags, ...; see `data_check.check_data_head`); None: the data is not looked at.
        **flags: the training flags.

    Returns:
        The validated training flags (as `training_options`).
    """
    out = training_options(task, **flags)
    check_gate_metric(task, gate_metric)
    if recipe:
        from sparse_transfer.tasks.recipe_fit import inert_modifier_warnings

        warnings = inert_modifier_warnings(recipe, recipe_args, zoo=zoo or None)
        if warnings and not allow_inert_modifiers:
            raise PipelineError(
                f"recipe {recipe}: {warnings[0]} (set allow_inert_modifiers to run anyway)"
            )
    if data:
        from sparse_transfer.pipeline.data_check import check_data_head

        limits = {k: out[k] for k in ("max_train_samples", "max_eval_samples") if k in out}
        check_data_head(task, **data, **limits)
    return out
