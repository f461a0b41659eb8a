"""The KFP "Create run" form: a short list of described choices plus one `trainer_flags` object.

KFP shows each root input of the compiled spec as one form field, with the description
from the pipeline docstring's ``Args:`` (kfp/dsl/component_factory.py
``extract_component_interface``); the rarely changed data/training flags travel in the
`trainer_flags` JSON object and are checked by the flag schema in the first step.
"""

from pathlib import Path

import pytest
import yaml

from sparse_transfer.errors import PipelineError
from sparse_transfer.pipeline.config import load_run_config, merge_parameters
from sparse_transfer.pipeline.options import check_trainer_flags, configure_run

pytest.importorskip("kfp")

COMPILED = Path(__file__).resolve().parents[2] / "pipelines" / "compiled"
# Top-level choices each form may show: the ~20 the brief names plus the non-flag run
# knobs that the graph needs as plain inputs (gate switches, teacher seed, serving size).
FORM_LIMIT = {"sparse_transfer_pipeline.yaml": 32, "dense_teacher_pipeline.yaml": 22}


def _root_inputs(name):
    spec = next(yaml.safe_load_all((COMPILED / name).read_text()))
    return spec["root"]["inputDefinitions"]["parameters"]


@pytest.mark.parametrize("name", sorted(FORM_LIMIT))
def test_form_is_short_and_every_field_is_described(name):
    inputs = _root_inputs(name)
    assert len(inputs) <= FORM_LIMIT[name]
    assert [key for key, p in inputs.items() if not p.get("description", "").strip()] == []
    assert inputs["trainer_flags"]["parameterType"] == "STRUCT"
    assert inputs["trainer_flags"]["defaultValue"] == {}
    assert inputs["trainer_flags"]["isOptional"] is True
    for moved in ("fp16", "seed", "doc_stride", "max_steps", "evaluation_strategy",
                  "save_total_limit", "dataset_config_name", "validation_ratio"):  # fmt: skip
        if not (moved == "seed" and name.startswith("dense")):
            assert moved not in inputs, moved


def test_trainer_flags_unknown_key_fails_at_configure_time_with_one_line():
    with pytest.raises(PipelineError) as info:
        configure_run("text-classification", trainer_flags={"fp61": False})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("trainer_flags: unknown key 'fp61'; known: task_name,")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"save_total_limit": 0}, "trainer_flags.save_total_limit must be at least 1, got 0"),
        ({"fp16": "no"}, "trainer_flags.fp16 must be bool, got 'no'"),
        ({"evaluation_strategy": "daily"},
         "trainer_flags.evaluation_strategy must be one of ('no', 'steps', 'epoch'), got 'daily'"),
        ({"validation_ratio": float("nan")},
         "trainer_flags.validation_ratio must be a finite number, got nan"),
    ],
)  # fmt: skip
def test_trainer_flags_bad_value_is_one_line_naming_the_key(flags, expected):
    with pytest.raises(PipelineError) as info:
        configure_run("text-classification", trainer_flags=flags)
    assert str(info.value) == expected


def test_trainer_flags_win_over_flat_flags_and_are_normalised():
    out = configure_run(
        "text-classification",
        fp16=True,
        seed=42,
        trainer_flags={"fp16": False, "seed": 7.0, "max_steps": 3, "dataset_config_name": "x"},
    )
    assert out["fp16"] is False and out["seed"] == 7 and type(out["seed"]) is int
    assert out["max_steps"] == 3
    assert "dataset_config_name" not in out  # a data flag: fetch_data takes it
    with pytest.raises(PipelineError, match="must be a JSON object, got list"):
        check_trainer_flags([1])


def test_fetch_data_component_lays_trainer_flags_over_its_own(tmp_path):
    from components import fetch_data

    train = tmp_path / "train.jsonl"
    train.write_text('{"sentence": "good", "label": 1}\n{"sentence": "bad", "label": 0}\n' * 5)

    class Out:
        path = str(tmp_path / "out")
        metadata: dict = {}

    fetch_data.python_func(
        dataset=Out,
        train_file=str(train),
        validation_ratio=0.0,
        trainer_flags={"validation_ratio": 0.2, "seed": 1},
    )
    assert Out.metadata["validation_ratio"] == 0.2
    with pytest.raises(PipelineError, match=r"^trainer_flags\.validation_ratio must be float"):
        fetch_data.python_func(
            dataset=Out, train_file=str(train), trainer_flags={"validation_ratio": "x"}
        )


def test_run_config_with_flat_names_folds_them_into_trainer_flags(tmp_path):
    known = {"sparse_transfer": {"fp16": None, "max_seq_length": 0, "trainer_flags": {}}}
    del known["sparse_transfer"]["fp16"]
    path = tmp_path / "run.yaml"
    path.write_text(
        "pipeline: sparse_transfer\n"
        "parameters: {max_seq_length: 64, fp16: false, save_strategy: 'no', "
        "trainer_flags: {seed: 3}}\n"
    )
    config = load_run_config(path, known)
    assert config.parameters == {
        "max_seq_length": 64,
        "trainer_flags": {"seed": 3, "fp16": False, "save_strategy": "no"},
    }
    path.write_text("pipeline: sparse_transfer\nparameters: {save_total_limit: 0}\n")
    with pytest.raises(PipelineError) as info:
        load_run_config(path, known)
    assert str(info.value).splitlines()[0] == (
        f"{path}: trainer_flags.save_total_limit must be at least 1, got 0"
    )


def test_real_run_configs_and_overrides_fold_into_the_pipelines_trainer_flags():
    from pipelines.client import known_parameters, read_config

    configs = Path(__file__).resolve().parents[2] / "pipelines" / "configs"
    config = read_config(configs / "embedded-default.yaml")
    assert set(config.parameters) <= set(known_parameters()[config.pipeline])
    merged = merge_parameters(
        {"trainer_flags": {"seed": 1, "fp16": False}, "task": "a"},
        {"trainer_flags": {"seed": 2}},
    )
    assert merged == {"trainer_flags": {"seed": 2, "fp16": False}, "task": "a"}
