"""The zoo against a real loopback S3 server and a local folder: push, pull, resolve, browse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from safetensors.numpy import save_file

from sparse_transfer import storage, zoo
from sparse_transfer.errors import StorageError, ZooError

pytestmark = pytest.mark.integration

UPSTREAM = "zoo:nlp/masked_language_modeling/tiny-bert/pytorch/huggingface/toy_corpus/pruned90-none"
SST2 = "zoo:nlp/sentiment_analysis/tiny-bert/pytorch/huggingface/sst2/pruned90_quant-none"
TEACHER = "zoo:nlp/sentiment_analysis/tiny-bert/pytorch/huggingface/sst2/base-none"


@pytest.fixture(params=["s3", "local"])
def zoo_root(request, tmp_path, monkeypatch) -> str:
    """A zoo root on the loopback S3 server or in a local folder, set as SPARSE_TRANSFER_ZOO."""
    monkeypatch.setenv("SPARSE_TRANSFER_CACHE", str(tmp_path / "cache"))
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        root = f"s3://{bucket}/zoo"
    else:
        root = str(tmp_path / "local-zoo")
    monkeypatch.setenv("SPARSE_TRANSFER_ZOO", root)
    return root


def _trained_output(
    path: Path, *, sparsity: float = 0.9, quantized: bool = False, acc: float = 0.8
) -> Path:
    """What `sparse-transfer train` leaves in --output_dir (weights faked: no torch needed)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps({"architectures": ["BertForSequenceClassification"]})
    )
    save_file({"w": np.zeros((4, 4), dtype=np.float32)}, str(path / "model.safetensors"))
    (path / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (path / "recipe.yaml").write_text("version: 1.1.0\nmodifiers: []\n")
    (path / "sparsity.json").write_text(json.dumps({"overall_sparsity": sparsity}))
    (path / "eval_results.json").write_text(
        json.dumps({"eval_accuracy": acc, "eval_loss": 0.4, "epoch": 1.0})
    )
    (path / "training_args.bin").write_bytes(b"\x80pickle")
    (path / "checkpoint-10").mkdir()
    (path / "checkpoint-10" / "optimizer.pt").write_bytes(b"x")
    if quantized:
        (path / "quantization.json").write_text("{}")
    return path


def _tiny_onnx(weight: np.ndarray | None = None) -> onnx.ModelProto:
    """A one-MatMul graph whose only initializer is `weight`."""
    weight = np.ones((2, 2), dtype=np.float32) if weight is None else weight
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph)


def test_push_refuses_non_finite_or_unreadable_weights(zoo_root, tmp_path):
    """Nothing non-finite is ever published (issue 13.7): a NaN model, a NaN deployment."""
    nan_model = _trained_output(tmp_path / "nan-model")
    save_file(
        {"w": np.full((2, 2), np.nan, dtype=np.float32)}, str(nan_model / "model.safetensors")
    )
    with pytest.raises(ZooError, match=r"model.safetensors holds 4 NaN or infinite values"):
        zoo.push(nan_model, SST2)
    inf_deployment = _trained_output(tmp_path / "inf-deployment")
    (inf_deployment / "deployment").mkdir()
    weight = np.array([[1.0, np.inf], [2.0, 3.0]], dtype=np.float32)
    onnx.save(_tiny_onnx(weight), str(inf_deployment / "deployment" / "model.onnx"))
    with pytest.raises(ZooError, match=r"deployment/model.onnx holds 1 NaN or infinite values"):
        zoo.push(inf_deployment, SST2)
    truncated = _trained_output(tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ZooError, match="not a readable weights file"):
        zoo.push(truncated, SST2)
    assert not storage.is_published(zoo.entry_uri(SST2))


def _recipe_entry(path: Path) -> Path:
    (path / "recipe").mkdir(parents=True)
    (path / "recipe" / "recipe.yaml").write_text("version: 1.1.0\n# transfer\n")
    (path / "recipe" / "dense_teacher.yaml").write_text("version: 1.1.0\n# teacher\n")
    return path


def test_push_lays_out_a_trained_output_dir(zoo_root, tmp_path):
    out = _trained_output(tmp_path / "run", quantized=True)
    (out / "deployment").mkdir()
    onnx.save(_tiny_onnx(), str(out / "deployment" / "model.onnx"))
    # The zoo sits below the task layer: the head -> task table is handed down as data.
    from sparse_transfer.tasks.registry import architecture_tasks

    uri = zoo.push(
        out, SST2, parent=UPSTREAM, card={"training_command": "sparse-transfer train x"},
        architectures=architecture_tasks(),
    )  # fmt: skip
    assert uri == f"{zoo_root}/{SST2.removeprefix('zoo:')}"

    info = zoo.show(SST2)
    files = [f["path"] for f in info["files"]]
    assert "training/config.json" in files and "training/recipe.yaml" in files
    assert (
        "recipe/recipe.yaml" in files and "deployment/model.onnx" in files and "model.md" in files
    )
    assert not any("training_args.bin" in f or "checkpoint-10" in f for f in files)
    meta = info["card"]
    assert meta["stub"] == SST2 and meta["parent"] == UPSTREAM
    assert meta["task"] == "text-classification" and meta["dataset"] == "sst2"
    assert meta["sparsity"] == 0.9 and meta["quantized"] is True
    assert meta["metrics"] == {"eval_accuracy": 0.8, "eval_loss": 0.4}
    assert meta["training_command"] == "sparse-transfer train x"
    assert "created" in meta and "# pruned90_quant-none" in info["body"]
    assert zoo.card(SST2) == meta


def test_push_refuses_overwrite_without_force(zoo_root, tmp_path):
    zoo.push(_trained_output(tmp_path / "a", acc=0.7), SST2)
    with pytest.raises(ZooError, match="already exists.*--force"):
        zoo.push(_trained_output(tmp_path / "b", acc=0.9), SST2)
    assert zoo.card(SST2)["metrics"]["eval_accuracy"] == 0.7
    zoo.push(tmp_path / "b", SST2, force=True)
    assert zoo.card(SST2)["metrics"]["eval_accuracy"] == 0.9


def test_resolve_model_recipe_teacher_and_deployment(zoo_root, tmp_path):
    zoo.push(_trained_output(tmp_path / "up"), UPSTREAM)
    zoo.push(_recipe_entry(tmp_path / "rec"), SST2, card={"recipe": "recipe.yaml"})
    zoo.push(_trained_output(tmp_path / "teach", sparsity=0.0), TEACHER)

    model = Path(zoo.resolve(UPSTREAM, "model"))
    assert (model / "config.json").is_file() and (model / "model.safetensors").is_file()
    recipe = Path(zoo.resolve(SST2, "recipe"))
    assert recipe.name == "recipe.yaml" and "# transfer" in recipe.read_text()
    other = Path(zoo.resolve(SST2 + "?recipe=dense_teacher.yaml", "recipe"))
    assert "# teacher" in other.read_text()
    teacher = Path(zoo.resolve(TEACHER, "teacher"))
    assert json.loads((teacher / "sparsity.json").read_text())["overall_sparsity"] == 0.0

    with pytest.raises(ZooError, match="has no deployment/"):
        zoo.resolve(UPSTREAM, "deployment")
    with pytest.raises(ZooError, match="has no training/ to use as a model"):
        zoo.resolve(SST2, "model")
    with pytest.raises(ZooError, match="no zoo entry .*zoo seed"):
        zoo.resolve(UPSTREAM.replace("pruned90", "pruned80"), "model")
    with pytest.raises(ZooError, match="missing: SPARSE_TAG"):
        zoo.resolve(UPSTREAM.rsplit("/", 1)[0], "model")

    # The entry's URI works as well as its stub, and hub ids / YAML pass through unchanged.
    entry = zoo.entry_uri(UPSTREAM)
    assert (Path(zoo.resolve(entry, "model")) / "config.json").is_file()
    assert zoo.resolve("bert-base-uncased", "model") == "bert-base-uncased"
    assert zoo.resolve("sentence-transformers/all-MiniLM-L6-v2", "teacher").startswith("sentence-")
    yaml_text = "version: 1.1.0\nmodifiers: []\n"
    assert zoo.resolve(yaml_text, "recipe") == yaml_text


def test_pull_then_resolve_the_local_copy(zoo_root, tmp_path):
    zoo.push(_trained_output(tmp_path / "up"), UPSTREAM)
    dest = zoo.pull(UPSTREAM, tmp_path / "pulled")
    assert (dest / "model.md").is_file() and (dest / "training" / "config.json").is_file()
    assert storage.is_published(dest)
    assert zoo.resolve(str(dest), "model") == str(dest / "training")
    assert Path(zoo.resolve(f"file://{dest}", "recipe")).name == "recipe.yaml"
    with pytest.raises(StorageError, match=r"already holds a download.*zoo pull --force"):
        zoo.pull(UPSTREAM, dest)


def test_list_show_and_search(zoo_root, tmp_path):
    zoo.push(_trained_output(tmp_path / "up"), UPSTREAM)
    zoo.push(_trained_output(tmp_path / "sst2", quantized=True), SST2, parent=UPSTREAM)
    zoo.push(_trained_output(tmp_path / "teach", sparsity=0.0), TEACHER)
    stubs = [e["stub"] for e in zoo.list_entries()]
    assert stubs == sorted([UPSTREAM, SST2, TEACHER])
    assert [e["stub"] for e in zoo.list_entries("sentiment_analysis")] == sorted([SST2, TEACHER])
    assert [e["stub"] for e in zoo.search(min_sparsity=0.5)] == sorted([UPSTREAM, SST2])
    assert [e["stub"] for e in zoo.search(task="sentiment-analysis", min_sparsity=0.5)] == [SST2]
    assert [e["stub"] for e in zoo.search(task="sentiment_analysis", quantized=False)] == [TEACHER]
    assert zoo.search(task="question_answering") == []
    entry = next(e for e in zoo.list_entries() if e["stub"] == SST2)
    assert entry["parent"] == UPSTREAM and entry["parts"] == ["recipe", "training"]


def test_half_pushed_entry_is_invisible_and_refused(zoo_root, tmp_path):
    zoo.push(_trained_output(tmp_path / "up"), UPSTREAM)
    # Files of a second entry land without a manifest (an interrupted push).
    half = zoo.entry_uri(TEACHER)
    if storage.is_remote(half):
        loc = storage.parse_uri(half)
        storage.write_text_atomic(f"s3://{loc.bucket}/{loc.key}/training/config.json", "{}")
    else:
        Path(half, "training").mkdir(parents=True)
        Path(half, "training", "config.json").write_text("{}")
    assert [e["stub"] for e in zoo.list_entries()] == [UPSTREAM]
    with pytest.raises(StorageError, match="no manifest.json"):
        zoo.resolve(TEACHER, "teacher")


def test_bad_push_sources(zoo_root, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooError, match="neither a zoo entry"):
        zoo.push(tmp_path / "empty", SST2)
    with pytest.raises(ZooError, match="missing: DATASET, SPARSE_TAG"):
        zoo.push(_trained_output(tmp_path / "x"), "zoo:nlp/a/b/c/d")
    with pytest.raises(ZooError, match="parent: zoo stub 'zoo:nlp/only' names 2 of 7"):
        zoo.push(tmp_path / "x", SST2, parent="zoo:nlp/only")


def test_cli_push_list_show_search_pull(zoo_root, tmp_path, capsys):
    from sparse_transfer.cli import main

    out = _trained_output(tmp_path / "run")
    args = [
        "--parent",
        UPSTREAM,
        "--card",
        "description=tiny test model",
        "--card",
        'gate={"passed": true}',
    ]
    assert main(["zoo", "push", str(out), SST2, *args]) == 0
    assert main(["zoo", "push", str(out), SST2]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["zoo", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["stub"] for e in listed] == [SST2]
    assert main(["zoo", "show", SST2]) == 0
    shown = capsys.readouterr().out
    assert f"parent: {UPSTREAM}" in shown and "description: tiny test model" in shown
    assert zoo.card(SST2)["gate"] == {"passed": True}
    assert main(["zoo", "search", "--task", "sentiment_analysis", "--min_sparsity", "0.95"]) == 0
    assert "(no entries)" in capsys.readouterr().out
    assert main(["zoo", "pull", SST2, str(tmp_path / "copy")]) == 0
    assert (tmp_path / "copy" / "training" / "config.json").is_file()
    assert main(["zoo", "resolve", SST2, "--kind", "recipe"]) == 0
    assert capsys.readouterr().out.strip().endswith("recipe.yaml")
    assert main(["zoo", "show", "zoo:nlp/sentiment_analysis"]) == 2
    assert "missing: ARCHITECTURE" in capsys.readouterr().err


def _race_pushes(sources: list[Path], stub: str, force: bool) -> list[object]:
    import threading

    barrier = threading.Barrier(len(sources))
    results: list[object] = [None] * len(sources)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = zoo.push(sources[i], stub, force=force)
        except (ZooError, StorageError) as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(sources))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_concurrent_pushes_of_one_stub_leave_one_whole_entry(zoo_root, tmp_path):
    """Issue 13.4: one push wins, the other fails with a message naming --force; forced
    pushes both land, one after the other, and the entry is always complete."""
    sources = [_trained_output(tmp_path / f"run{i}", acc=0.5 + i / 10) for i in range(2)]
    for round_ in range(3):
        stub = SST2.replace("sst2", f"sst2r{round_}")
        results = _race_pushes(sources, stub, force=False)
        failed = [r for r in results if isinstance(r, Exception)]
        assert len(failed) == 1 and isinstance(failed[0], ZooError), results
        assert "--force" in str(failed[0])
        winner = 1 if results[0] is failed[0] else 0
        accuracy = zoo.card(stub)["metrics"]["eval_accuracy"]
        assert accuracy == 0.5 + winner / 10
        assert all(isinstance(r, str) for r in _race_pushes(sources, stub, force=True))
        assert zoo.card(stub)["metrics"]["eval_accuracy"] in (0.5, 0.6)
        assert Path(zoo.resolve(stub, "model"), "config.json").is_file()  # whole and verified
