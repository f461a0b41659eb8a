"""One schema for the data/training flags (`sparse_transfer.tasks.flags`), and every copy of it.

KFP builds a pipeline's or a component's parameters from the Python function's
literal signature (kfp.dsl.component_factory reads `inspect.signature`), so the
two pipeline functions and the configure_training / fetch_data components must
repeat names, types and defaults. These tests prove each copy matches the
schema; the library's own users (CLI dataclasses, pipeline option checks)
derive from it and are checked for the limits they share.
"""

from __future__ import annotations

import inspect

import pytest

from sparse_transfer.errors import DataError, PipelineError
from sparse_transfer.pipeline.options import TRAINING_OPTIONS, training_options
from sparse_transfer.tasks.args import DataArguments
from sparse_transfer.tasks.flags import (
    DATA_FLAGS,
    DEFAULT_OVERRIDES,
    FLAGS,
    TRAINING_FLAGS,
)

pytest.importorskip("kfp")


# The flags each run form keeps top-level; the rest travel in its `trainer_flags` object.
ON_THE_FORM = {
    "sparse_transfer_pipeline": ("task_name", "dataset_name", "train_file", "validation_file",
                                 "max_seq_length", "per_device_train_batch_size"),
    "dense_teacher_pipeline": ("task_name", "dataset_name", "train_file", "validation_file",
                               "max_seq_length", "per_device_train_batch_size", "seed"),
}  # fmt: skip


def _on_the_form(pipeline: str):
    return tuple(FLAGS[name] for name in ON_THE_FORM[pipeline])


def _copies():
    from components import configure_training, fetch_data
    from pipelines.dense_teacher_pipeline import dense_teacher_pipeline
    from pipelines.sparse_transfer_pipeline import sparse_transfer_pipeline

    return {
        "sparse_transfer_pipeline": (sparse_transfer_pipeline.pipeline_func,
                                     _on_the_form("sparse_transfer_pipeline")),
        "dense_teacher_pipeline": (dense_teacher_pipeline.pipeline_func,
                                   _on_the_form("dense_teacher_pipeline")),
        "configure_training": (configure_training.python_func, TRAINING_FLAGS),
        "fetch_data": (fetch_data.python_func, DATA_FLAGS),
    }  # fmt: skip


@pytest.mark.parametrize(
    "name",
    ["sparse_transfer_pipeline", "dense_teacher_pipeline", "configure_training", "fetch_data"],
)
def test_every_kfp_copy_has_the_schema_names_types_and_defaults(name):
    func, flags = _copies()[name]
    params = inspect.signature(func).parameters
    overrides = DEFAULT_OVERRIDES.get(name, {})
    for spec in flags:
        assert spec.name in params, f"{name} lacks the flag {spec.name}"
        param = params[spec.name]
        assert param.annotation in (spec.type, spec.type.__name__), (
            f"{name}.{spec.name} is {param.annotation}, the schema says {spec.type.__name__}"
        )
        expected = overrides.get(spec.name, spec.default)
        assert param.default == expected and type(param.default) is type(expected), (
            f"{name}.{spec.name} defaults to {param.default!r}, the schema says {expected!r}"
        )


@pytest.mark.parametrize("name", sorted(ON_THE_FORM))
def test_the_other_flags_travel_in_trainer_flags(name):
    func = _copies()[name][0]
    params = inspect.signature(func).parameters
    flat = sorted(set(params) & set(FLAGS))
    assert flat == sorted(ON_THE_FORM[name])
    assert params["trainer_flags"].annotation in (dict, "dict")
    assert params["trainer_flags"].default == {}


def test_no_override_hides_a_flag_the_schema_lacks():
    for overrides in DEFAULT_OVERRIDES.values():
        assert set(overrides) <= set(FLAGS)


def test_configure_training_takes_exactly_the_schema_flags():
    from components import configure_training

    params = list(inspect.signature(configure_training.python_func).parameters)
    from pipelines._opening import RUN_CHECKS

    assert params == ["task"] + [f.name for f in TRAINING_FLAGS] + list(RUN_CHECKS) + [
        "trainer_flags",
        "advanced",
        "pipeline",
    ]
    assert list(TRAINING_OPTIONS) == [f.name for f in TRAINING_FLAGS]


def test_cli_help_comes_from_the_schema():
    import dataclasses

    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(DataArguments)}
    shared = [name for name in helps if name in FLAGS]
    assert len(shared) >= 10
    for name in shared:
        assert helps[name] == FLAGS[name].help


def test_cli_and_pipeline_share_the_max_seq_length_limit():
    # They had drifted: >= 1 in the pipeline options, >= 8 on the command line.
    assert FLAGS["max_seq_length"].minimum == 8
    with pytest.raises(DataError, match="--max_seq_length must be at least 8, got 7"):
        DataArguments(max_seq_length=7)
    with pytest.raises(PipelineError, match="'max_seq_length' must be at least 8, got 7"):
        training_options("text-classification", max_seq_length=7)
    assert DataArguments(max_seq_length=8).max_seq_length == 8
    assert training_options("text-classification", max_seq_length=8) == {"max_seq_length": 8}


def test_schema_limits_reject_nan_and_wrong_types_in_both_layers():
    with pytest.raises(PipelineError, match="'seed' must be int, got 'x'"):
        training_options("text-classification", seed="x")
    with pytest.raises(DataError, match="--max_train_samples must be at least 1, got -3"):
        DataArguments(max_train_samples=-3)
    assert DataArguments(max_train_samples=0).max_train_samples == 0  # the "unset" spelling
    nan_flag = DATA_FLAGS[[f.name for f in DATA_FLAGS].index("validation_ratio")]
    from sparse_transfer.tasks.flags import check_value

    assert check_value(nan_flag, float("nan")) == "must be a finite number, got nan"
