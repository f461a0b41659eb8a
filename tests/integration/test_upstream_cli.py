"""`sparse-transfer upstream ...` and `frontier trial` by hand: results, and bad input as one line, exit 2."""

import json

import pytest

from sparse_transfer.cli import main
from sparse_transfer.embedded.fixtures import make_tiny_bert, sentiment_rows, write_jsonl

pytestmark = pytest.mark.integration


def test_corpus_prune_evaluate_by_hand(tmp_path, capsys):
    dense = make_tiny_bert(tmp_path / "dense", task="masked-language-modeling", hidden_size=32)
    (tmp_path / "text.txt").write_text(
        "\n".join(f"Sentence number {i} is here." for i in range(40))
    )
    assert main(["upstream", "corpus", str(tmp_path / "text.txt"), "--output_dir", str(tmp_path / "c"),
                 "--eval_samples", "8"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["train_sentences"] == 32
    assert main(["upstream", "prune", str(dense), "--corpus_dir", str(tmp_path / "c"),
                 "--output_dir", str(tmp_path / "s"), "--batch_size", "8", "--max_length", "16",
                 "--recipe", "gmp_block4_pruned90", "--save_steps", "0",
                 "--recipe_args", '{"num_epochs": 1, "pruning_end_epoch": 0.5, "update_frequency": 0.25}']) == 0  # fmt: skip
    facts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (
        facts["structure"] == "block4" and facts["train_steps"] == 4 and facts["mlm_head"] is True
    )
    assert main(["upstream", "evaluate", str(tmp_path / "s"), "--dense_dir", str(dense),
                 "--corpus_dir", str(tmp_path / "c")]) == 0  # fmt: skip
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["eval_samples"] == 8 and 0.0 <= metrics["mlm_accuracy"] <= 1.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["upstream", "corpus", "/nonexistent/corpus", "--output_dir", "x"], "corpus: /nonexistent/corpus: no such file or folder"),
        (["upstream", "prune", "d", "--corpus_dir", "c", "--output_dir", "o", "--recipe", "gmp_pruned99"], "upstream recipe 'gmp_pruned99': not a file and not a built-in"),
        (["upstream", "prune", str(__file__), "--corpus_dir", "c", "--output_dir", "o"], "c/train.txt: missing (c should be a folder written by `upstream corpus`)"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_frontier_trial_prints_what_katib_collects(tmp_path, capsys):
    dense = make_tiny_bert(tmp_path / "dense", hidden_size=32)
    train = write_jsonl(sentiment_rows(32), tmp_path / "train.jsonl")
    val = write_jsonl(sentiment_rows(16, seed=1), tmp_path / "val.jsonl")
    args = '{"num_epochs": 2, "pruning_end_epoch": 1.0, "update_frequency": 0.5, "qat_start_epoch": 1.0, "observer_epoch": 1.5}'
    assert main(["frontier", "trial", "--point", "block4:0.8", "--model_name_or_path", str(dense),
                 "--train_file", str(train), "--validation_file", str(val), "--task_name", "sst2",
                 "--recipe_args", args, "--max_seq_length", "16", "--per_device_train_batch_size", "16",
                 "--work_dir", str(tmp_path / "w")]) == 0  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()[-2:]
    assert lines[0].startswith("accuracy=") and lines[1].startswith("latency_ms=")
    assert 0.0 <= float(lines[0].split("=")[1]) <= 1.0 and float(lines[1].split("=")[1]) > 0
