"""Run configs: unknown keys and mistyped values are errors naming the key and the file."""

import pytest

from sparse_transfer.errors import PipelineError
from sparse_transfer.pipeline.config import load_run_config, to_kfp_cron, validate_parameters

KNOWN = {"sparse_transfer": {"max_seq_length": 128, "fp16": True, "min_metric": 0.0, "task": "x"}}


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_valid_config_keeps_values_and_widens_int_to_float(tmp_path):
    path = write(
        tmp_path,
        "pipeline: sparse_transfer\nrun_name: r1\nlocal: {seed_zoo: tiny}\n"
        "parameters: {max_seq_length: 64, fp16: false, min_metric: 1}\n",
    )
    config = load_run_config(path, KNOWN)
    assert config.parameters == {"max_seq_length": 64, "fp16": False, "min_metric": 1.0}
    assert isinstance(config.parameters["min_metric"], float)
    assert config.run_name == "r1" and config.local == {"seed_zoo": "tiny"}


def test_unknown_parameter_names_key_file_and_suggestion(tmp_path):
    path = write(tmp_path, "pipeline: sparse_transfer\nparameters: {max_seq_lenght: 64}\n")
    with pytest.raises(PipelineError) as err:
        load_run_config(path, KNOWN)
    message = str(err.value)
    assert "max_seq_lenght" in message and str(path) in message
    assert "did you mean 'max_seq_length'" in message


def test_unknown_top_level_and_local_keys_are_all_reported(tmp_path):
    path = write(tmp_path, "pipeline: sparse_transfer\nparams: {}\nlocal: {root: x}\n")
    with pytest.raises(PipelineError) as err:
        load_run_config(path, KNOWN)
    assert "unknown key 'params'" in str(err.value)
    assert "unknown key 'local.root'" in str(err.value)


def test_wrong_type_and_unknown_pipeline(tmp_path):
    with pytest.raises(PipelineError, match="'fp16' must be bool"):
        load_run_config(
            write(tmp_path, "pipeline: sparse_transfer\nparameters: {fp16: 1}\n"), KNOWN
        )
    with pytest.raises(PipelineError, match="unknown pipeline 'sparse_transfr'"):
        load_run_config(write(tmp_path, "pipeline: sparse_transfr\n"), KNOWN)
    with pytest.raises(PipelineError, match="'max_seq_length' must be int"):
        validate_parameters({"max_seq_length": True}, KNOWN["sparse_transfer"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        load_run_config(tmp_path / "nope.yaml", KNOWN)
    with pytest.raises(PipelineError, match="invalid YAML: line 2, column 1"):
        load_run_config(write(tmp_path, "pipeline: [\n"), KNOWN)
    with pytest.raises(PipelineError, match="must be a mapping"):
        load_run_config(write(tmp_path, "- a\n"), KNOWN)


def test_cron_gets_kfp_seconds_field():
    assert to_kfp_cron("0 3 * * 1") == "0 0 3 * * 1"
    assert to_kfp_cron("30 0 3 * * 1") == "30 0 3 * * 1"
    with pytest.raises(PipelineError, match="has 3 fields"):
        to_kfp_cron("0 3 *")


# --- the same YAML guard as recipes, one-line errors, finite numbers ----------------------------


def test_alias_bomb_is_refused_quickly(tmp_path):
    """The shared guard (sparse_transfer.safe_yaml): refused before anything is built."""
    import time

    lines = ["pipeline: sparse_transfer", "description: x", "a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 8)}]" for i in range(1, 9)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    start = time.perf_counter()
    with pytest.raises(PipelineError, match=f"{path}: expands to more than 100000 values"):
        load_run_config(path, KNOWN)
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "pipeline: sparse_transfer\nparameters:\n  max_seq_length: 64\n  max_seq_length: 128\n",
            r"run.yaml:4: duplicate key 'max_seq_length' \(first on line 3\)",
        ),
        ("pipeline: a\npipeline: sparse_transfer\n", r"run.yaml:2: duplicate key 'pipeline'"),
        (
            "pipeline: sparse_transfer\nparameters: {min_metric: .nan}\n",
            r"run.yaml: parameter 'min_metric' is NaN: only finite numbers are allowed",
        ),
        (
            "pipeline: sparse_transfer\nparameters: {min_metric: -.inf}\n",
            r"run.yaml: parameter 'min_metric' is -infinity",
        ),
        (
            "pipeline: sparse_transfer\nparameters: {min_metric: 1" + "0" * 350 + "}\n",
            r"parameter 'min_metric' is too large for a float \(1163 bits\)",
        ),
        ("pipeline: sparse_transfer\nparameters: {x: 1" + ":0" * 300 + "}\n", "number longer"),
    ],
)
def test_duplicate_keys_and_non_finite_or_oversized_numbers_are_errors(tmp_path, text, match):
    with pytest.raises(PipelineError, match=match):
        load_run_config(write(tmp_path, text), KNOWN)


def test_non_utf8_file_and_directory_give_one_line_errors(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("pipeline: sparse_transfer\ndescription: caf\xe9\n".encode("latin-1"))
    with pytest.raises(PipelineError) as err:
        load_run_config(path, KNOWN)
    assert (
        str(err.value)
        == f"run config {path} is not UTF-8 text (byte 42: invalid continuation byte)"
    )
    with pytest.raises(PipelineError) as err:
        load_run_config(tmp_path, KNOWN)
    assert str(err.value) == f"run config {tmp_path} is a directory, not a YAML file"


def test_overrides_are_checked_for_finite_numbers_too():
    with pytest.raises(PipelineError, match="overrides: parameter 'min_metric' is infinity"):
        validate_parameters(
            {"min_metric": float("inf")}, KNOWN["sparse_transfer"], source="overrides"
        )


def test_gate_refuses_a_nan_threshold_instead_of_switching_the_check_off():
    from sparse_transfer.pipeline.gate import evaluate_gate

    with pytest.raises(PipelineError, match="gate parameter min_metric is NaN"):
        evaluate_gate(0.5, metric="accuracy", min_metric=float("nan"))
    assert evaluate_gate(0.5, metric="accuracy", min_metric=0.9).passed is False
