"""The KFP "Create run" form: a short list of described choices plus two JSON objects.

KFP shows each root input of the compiled spec as one form field, with the description
from the pipeline docstring's ``Args:`` (kfp/dsl/component_factory.py
``extract_component_interface``); the rarely changed data/training flags travel in the
`trainer_flags` JSON object and are checked by the flag schema in the first step, the rarely
changed step settings in the `advanced` object (`sparse_transfer.pipeline.settings`), checked
in the same step and read, typed, by the steps that use them.
"""

from pathlib import Path

import pytest
import yaml

from sparse_transfer.errors import PipelineError
from sparse_transfer.pipeline.config import load_run_config, merge_parameters
from sparse_transfer.pipeline.options import check_trainer_flags, configure_run

pytest.importorskip("kfp")

COMPILED = Path(__file__).resolve().parents[2] / "pipelines" / "compiled"
# The fields each form shows: about 20 per-run choices (task, models, recipes, data, length,
# batch, gate, publish, zoo, accelerator, serving) plus trainer_flags and advanced.
FORM_FIELDS = {"sparse_transfer_pipeline.yaml": 23, "dense_teacher_pipeline.yaml": 19}
# Moved off the form into `advanced`: each pipeline's steps read them from the object.
MOVED_SETTINGS = ("teacher_recipe_args", "teacher_seed", "publish_force", "must_beat_published",
                  "gate_require_int8", "allow_inert_modifiers", "node_accelerator_limit",
                  "serving_max_replicas", "num_nodes", "nproc_per_node")  # fmt: skip


def _root_inputs(name):
    spec = next(yaml.safe_load_all((COMPILED / name).read_text()))
    return spec["root"]["inputDefinitions"]["parameters"]


@pytest.mark.parametrize("name", sorted(FORM_FIELDS))
def test_form_is_short_and_every_field_is_described(name):
    inputs = _root_inputs(name)
    assert len(inputs) == FORM_FIELDS[name]
    for obj in ("trainer_flags", "advanced"):
        assert inputs[obj]["parameterType"] == "STRUCT" and inputs[obj]["defaultValue"] == {}
    assert [k for k in MOVED_SETTINGS if k in inputs] == []
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


@pytest.mark.parametrize(
    ("advanced", "pipeline", "expected"),
    [
        ({"teacher_sed": 3}, "sparse_transfer",
         "advanced: unknown key 'teacher_sed'; known: teacher_recipe_args, teacher_seed, "),
        ({"teacher_seed": 3}, "dense_teacher",  # a key the dense pipeline's steps never read
         "advanced: unknown key 'teacher_seed'; known: allow_inert_modifiers, "),
        ({"teacher_seed": "7"}, "sparse_transfer", "advanced.teacher_seed must be int, got '7'"),
        ({"teacher_seed": -2}, "", "advanced.teacher_seed must be at least -1, got -2"),
        ({"publish_force": 1}, "", "advanced.publish_force must be bool, got 1"),
        ({"num_nodes": 0}, "", "advanced.num_nodes must be at least 1, got 0"),
        ({"node_accelerator_limit": "two"}, "",
         "advanced.node_accelerator_limit must be a count of GPUs like \"1\" (or empty), "
         "got 'two'"),
        ({"serving_max_replicas": float("inf")}, "",
         "advanced.serving_max_replicas must be int, got inf"),
        ({"teacher_recipe_args": "[1]"}, "", "advanced.teacher_recipe_args is not a recipe-args "),
    ],
)  # fmt: skip
def test_advanced_bad_key_or_value_fails_at_configure_time_with_one_line(
    advanced, pipeline, expected
):
    with pytest.raises(PipelineError) as info:
        configure_run("text-classification", advanced=advanced, pipeline=pipeline)
    message = str(info.value)
    assert "\n" not in message and message.startswith(expected), message
    with pytest.raises(PipelineError, match="^parameter advanced must be a JSON object, got str$"):
        configure_run("text-classification", advanced="{}")


def test_steps_read_their_typed_setting_the_object_winning_over_their_own_parameter():
    from sparse_transfer.pipeline.settings import RunSettings, run_settings

    assert run_settings({}) == RunSettings()
    assert RunSettings().teacher_seed == 20811 and RunSettings().serving_max_replicas == 1
    # KFP hands JSON numbers over as floats: 4.0 is the int 4
    own = run_settings({"num_nodes": 4.0, "publish_force": True}, num_nodes=2, nproc_per_node=3)
    assert (own.num_nodes, own.nproc_per_node, own.publish_force) == (4, 3, True)
    assert type(own.num_nodes) is int
    assert run_settings(None, teacher_seed=-1).teacher_seed == -1  # frontier: the run's seed
    with pytest.raises(PipelineError, match=r"^advanced\.gate_require_int8 must be bool"):
        run_settings({"gate_require_int8": "yes"})


def test_allow_inert_modifiers_in_advanced_lets_the_configure_step_pass():
    short = '{"num_epochs": 2}'
    with pytest.raises(PipelineError, match="set allow_inert_modifiers"):
        configure_run("text-classification", recipe="sst2_pruned90_quant", recipe_args=short)
    assert configure_run(
        "text-classification", recipe="sst2_pruned90_quant", recipe_args=short,
        advanced={"allow_inert_modifiers": True}, pipeline="dense_teacher",
    ) == {}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FORM_FIELDS))
def test_every_step_that_reads_a_setting_gets_the_runs_advanced_object(name):
    spec = next(yaml.safe_load_all((COMPILED / name).read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    readers = ("configure-training", "publish", "train-teacher")
    if name.startswith("sparse"):
        readers = ("configure-training", "teacher", "teacher-label", "sparse-transfer", "publish",
                   "deploy-serving")  # fmt: skip
    given = {t for t, body in tasks.items() if "advanced" in body["inputs"].get("parameters", {})}
    assert given == set(readers)
    for task in readers:
        source = tasks[task]["inputs"]["parameters"]["advanced"]
        assert source == {"componentInputParameter": "advanced"}, task
    pipeline = tasks["configure-training"]["inputs"]["parameters"]["pipeline"]
    assert pipeline == {"runtimeValue": {"constant": name.removesuffix("_pipeline.yaml")}}


def test_flat_settings_in_run_configs_fold_into_advanced_per_pipeline(tmp_path):
    from pipelines.client import known_parameters

    known = known_parameters()
    path = tmp_path / "run.yaml"
    path.write_text(
        "pipeline: sparse_transfer\nparameters: {publish_force: true, teacher_seed: 3.0, "
        "num_nodes: 2, fp16: false, advanced: {gate_require_int8: true}}\n"
    )
    config = load_run_config(path, known)
    assert config.parameters == {
        "advanced": {"gate_require_int8": True, "publish_force": True, "teacher_seed": 3,
                     "num_nodes": 2},
        "trainer_flags": {"fp16": False},
    }  # fmt: skip
    path.write_text("pipeline: dense_teacher\nparameters: {teacher_seed: 3}\n")
    with pytest.raises(PipelineError, match="unknown parameter 'teacher_seed' for pipeline "):
        load_run_config(path, known)
    path.write_text("pipeline: sparse_transfer\nparameters: {serving_max_replicas: 0}\n")
    with pytest.raises(PipelineError) as info:
        load_run_config(path, known)
    assert str(info.value).splitlines()[0] == (
        f"{path}: advanced.serving_max_replicas must be at least 1, got 0"
    )
    merged = merge_parameters({"advanced": {"publish_force": True}}, {"advanced": {"num_nodes": 2}})
    assert merged == {"advanced": {"publish_force": True, "num_nodes": 2}}


@pytest.mark.parametrize("name", sorted(p.name for p in COMPILED.glob("*_pipeline.yaml")))
def test_every_pipelines_form_describes_every_field(name):
    inputs = _root_inputs(name)
    assert len(inputs) >= 19
    assert [key for key, p in inputs.items() if not p.get("description", "").strip()] == []
