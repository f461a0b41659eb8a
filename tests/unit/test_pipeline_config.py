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
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_run_config(write(tmp_path, "pipeline: [\n"), KNOWN)
    with pytest.raises(PipelineError, match="must be a mapping"):
        load_run_config(write(tmp_path, "- a\n"), KNOWN)


def test_cron_gets_kfp_seconds_field():
    assert to_kfp_cron("0 3 * * 1") == "0 0 3 * * 1"
    assert to_kfp_cron("30 0 3 * * 1") == "30 0 3 * * 1"
    with pytest.raises(PipelineError, match="has 3 fields"):
        to_kfp_cron("0 3 *")
