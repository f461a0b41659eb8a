"""`torchrun --nproc_per_node 2` (gloo, CPU) against one process with the same global batch.

Every run goes through the real command line, ``torchrun -m sparse_transfer train
text-classification ...``, on tiny BERTs (hidden 32, dropout off so the two runs
differ only by floating-point summation order). Three recipes: the seed's SST-2
recipe (constant pruning + QAT + distillation), GMP and oBS. Each rank logs a
SHA-256 of its trained weights and masks (`SparseTrainer._check_replicas_agree`,
which also fails the run if they differ); the test reads both ranks' logs.

The global batch is 8 in both cases: 2 ranks x 4 against 1 process x 8, and 32
training rows so every global batch is full (no uneven last shard).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparse_transfer.embedded import fixtures
from sparse_transfer.recipe import builtin_recipe_path

pytestmark = pytest.mark.integration

WORLD = 2
GLOBAL_BATCH = 8
SST2_RECIPE = str(builtin_recipe_path("sst2_pruned90_quant"))
SST2_ARGS = json.dumps({"num_epochs": 2, "qat_start_epoch": 1.0, "observer_epoch": 1.5})

GMP_RECIPE = """\
version: 1.1.0
num_epochs: 3
modifiers:
  - !EpochRangeModifier
      start_epoch: 0.0
      end_epoch: eval(num_epochs)
  - !GMPruningModifier
      params: ["re:bert.encoder.layer.*(query|key|value|dense).weight$"]
      init_sparsity: 0.05
      final_sparsity: 0.8
      start_epoch: 0.0
      end_epoch: 2.0
      update_frequency: 0.5
"""

OBS_RECIPE = """\
version: 1.1.0
modifiers:
  - !EpochRangeModifier
      start_epoch: 0.0
      end_epoch: 2.0
  - !OBSPruningModifier
      params: ["re:bert.encoder.layer.*(query|key|value|dense).weight$"]
      init_sparsity: 0.1
      final_sparsity: 0.6
      start_epoch: 0.0
      end_epoch: 1.0
      update_frequency: 0.5
      num_grads: 4
      fisher_block_size: 8
      global_sparsity: true
"""

SST2_LABELS = {0: "negative", 1: "positive"}
DIGEST = re.compile(
    r"rank (\d+) of (\d+): weights sha256 ([0-9a-f]{64}), masks sha256 ([0-9a-f]{64})"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_dropout_model(path: Path, **kwargs) -> Path:
    fixtures.make_tiny_bert(path, hidden_size=32, id2label=SST2_LABELS, **kwargs)
    config = json.loads((path / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("distributed")
    _no_dropout_model(root / "sparse_student", sparsity=0.9)
    _no_dropout_model(root / "dense_student")
    _no_dropout_model(root / "teacher", seed=1)
    rows = fixtures.sentiment_rows(48)
    fixtures.write_jsonl(rows[:32], root / "train.jsonl")
    fixtures.write_jsonl(rows[32:], root / "val.jsonl")
    (root / "gmp.yaml").write_text(GMP_RECIPE)
    (root / "obs.yaml").write_text(OBS_RECIPE)
    return root


def _argv(work: Path, name: str, world: int, out: Path, *extra: str) -> list[str]:
    recipes = {
        "sst2": ["--model_name_or_path", str(work / "sparse_student"), "--recipe", SST2_RECIPE,
                 "--recipe_args", SST2_ARGS, "--distill_teacher", str(work / "teacher")],
        "gmp": ["--model_name_or_path", str(work / "dense_student"),
                "--recipe", str(work / "gmp.yaml")],
        "obs": ["--model_name_or_path", str(work / "dense_student"),
                "--recipe", str(work / "obs.yaml")],
    }  # fmt: skip
    return [
        "train", "text-classification", *recipes[name],
        "--output_dir", str(out), "--task_name", "sst2",
        "--train_file", str(work / "train.jsonl"), "--validation_file", str(work / "val.jsonl"),
        "--do_train", "--do_eval", "--max_seq_length", "32",
        "--per_device_train_batch_size", str(GLOBAL_BATCH // world),
        "--per_device_eval_batch_size", "8", "--seed", "7", "--use_cpu",
        "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "true",
        "--dataloader_num_workers", "0", "--save_strategy", "no", *extra,
    ]  # fmt: skip


def _torchrun(argv: list[str], logs: Path) -> list[str]:
    """``torchrun --nproc_per_node 2 -m sparse_transfer ARGV``; returns the command."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "--log_dir", str(logs), "--redirects", "3",
        "-m", "sparse_transfer", *argv,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _rank_logs(logs: Path) -> dict[int, str]:
    found = {}
    for path in logs.rglob("stderr.log"):
        found[int(path.parent.name)] = path.read_text() + (path.parent / "stdout.log").read_text()
    return found


def _run_two(work: Path, name: str) -> tuple[Path, dict[int, str]]:
    out = work / f"{name}_2proc"
    logs = work / f"{name}_logs"
    result = subprocess.run(
        _torchrun(_argv(work, name, WORLD, out), logs),
        capture_output=True, text=True, env=_env(), timeout=300,
    )  # fmt: skip
    ranks = _rank_logs(logs)
    assert result.returncode == 0, "".join(text[-3000:] for text in ranks.values())
    return out, ranks


def _run_two_through_pipeline_step(work: Path, name: str, capfd) -> tuple[Path, dict[int, str]]:
    """The pipeline's training step with ``nproc_per_node=2``: it launches torchrun itself."""
    from sparse_transfer.pipeline import steps
    from sparse_transfer.scaleout.plan import ScaleOut

    data = work / "dataset_artifact"
    if not (data / steps.DATA_SPEC).exists():
        steps.fetch_data_step(
            data, train_file=str(work / "train.jsonl"), validation_file=str(work / "val.jsonl"),
            task_name="sst2",
        )  # fmt: skip
    argv = _argv(work, name, WORLD, work / "unused")
    options = {}
    for i, arg in enumerate(argv):
        if arg in ("--max_seq_length", "--per_device_train_batch_size", "--seed",
                   "--per_device_eval_batch_size", "--logging_steps", "--report_to",
                   "--disable_tqdm", "--dataloader_num_workers", "--save_strategy"):  # fmt: skip
            options[arg[2:]] = _typed(argv[i + 1])  # as pipeline.options hands them over
    options["use_cpu"] = True
    out = work / f"{name}_2proc"
    out.mkdir()
    capfd.readouterr()
    steps.train_step(
        "text-classification", argv[argv.index("--model_name_or_path") + 1], out, data,
        recipe=argv[argv.index("--recipe") + 1], training_args=options,
        scale=ScaleOut(nproc_per_node=WORLD),
    )  # fmt: skip
    captured = capfd.readouterr()
    text = captured.out + captured.err
    ranks = {int(m[1]): text for m in DIGEST.finditer(text)}
    return out, ranks


def _run_one(work: Path, name: str, *extra: str, out: Path | None = None) -> Path:
    from sparse_transfer.cli import main

    out = out or work / f"{name}_1proc"
    assert main(_argv(work, name, 1, out, *extra)) == 0
    return out


def _weights(model_dir: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _encoder_zeros(weights: dict) -> dict[str, int]:
    return {
        k: int((v == 0).sum())
        for k, v in weights.items()
        if k.startswith("bert.encoder") and k.endswith("weight") and "LayerNorm" not in k
    }


def _check_against_single(
    work: Path, name: str, atol: float, loss_rtol: float, capfd=None
) -> tuple:
    import numpy as np

    if capfd is None:
        two, ranks = _run_two(work, name)
    else:
        two, ranks = _run_two_through_pipeline_step(work, name, capfd)
    one = _run_one(work, name)
    # Both ranks logged bitwise-identical weights and masks.
    digests = {int(m[1]): m.groups()[2:] for text in ranks.values() for m in DIGEST.finditer(text)}
    assert sorted(digests) == [0, 1], {k: v[-2000:] for k, v in ranks.items()}
    assert digests[0] == digests[1]
    # Rank 0 alone wrote the outputs; the staging dir is gone.
    assert not (two.parent / f".{two.name}.partial").exists()
    assert (two / "recipe.yaml").exists() and (two / "sparsity.json").exists()
    # Same model as one process with the same global batch, within float tolerance.
    w2, w1 = _weights(two), _weights(one)
    assert set(w2) == set(w1)
    for key in w1:
        np.testing.assert_allclose(w2[key], w1[key], atol=atol, rtol=0, err_msg=key)
    r2 = json.loads((two / "eval_results.json").read_text())
    r1 = json.loads((one / "eval_results.json").read_text())
    assert r2["train_loss"] == pytest.approx(r1["train_loss"], rel=loss_rtol)
    assert r2["eval_loss"] == pytest.approx(r1["eval_loss"], rel=loss_rtol)
    assert r2["eval_accuracy"] == r1["eval_accuracy"]
    return w2, w1, r2, r1


def test_sst2_recipe_constant_pruning_qat_distillation(work):
    w2, w1, r2, _ = _check_against_single(work, "sst2", atol=2e-3, loss_rtol=1e-3)
    # Constant pruning: every zero of the 90%-sparse student is still exactly zero.
    assert r2["sparsity"]["kept"] is True and r2["sparsity"]["zeros_lost"] == 0
    student = _weights(work / "sparse_student")
    assert _encoder_zeros(w2) == _encoder_zeros(student) == _encoder_zeros(w1)


def test_gmp_recipe(work):
    w2, w1, _, _ = _check_against_single(work, "gmp", atol=1e-4, loss_rtol=1e-4)
    zeros = _encoder_zeros(w2)
    pruned = {k: v for k, v in zeros.items() if "attention.output.LayerNorm" not in k}
    for key, count in pruned.items():
        assert count == round(0.8 * w2[key].size), key  # the schedule's end, exactly
    for key in pruned:  # the very same masks as the single process
        assert ((w2[key] == 0) == (w1[key] == 0)).all(), key


def _typed(value: str):
    """'32' -> 32, 'true' -> True, other words stay strings."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def test_obs_recipe_through_the_pipeline_step(work, capfd):
    w2, w1, _, _ = _check_against_single(work, "obs", atol=1e-4, loss_rtol=1e-4, capfd=capfd)
    zeros2, zeros1 = _encoder_zeros(w2), _encoder_zeros(w1)
    assert sum(zeros2.values()) == sum(zeros1.values())
    total = sum(w2[k].size for k in zeros2)
    assert sum(zeros2.values()) == round(0.6 * total)  # global sparsity, exact
    for key in zeros2:
        assert ((w2[key] == 0) == (w1[key] == 0)).all(), key


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers at once, as a node failure would.

    torchrun starts each worker in a session of its own (torch's
    elastic/multiprocessing/subprocess_handler), so killing torchrun's process
    group would leave the workers training on as orphans.
    """
    import psutil

    agent = psutil.Process(proc.pid)
    victims = [agent, *agent.children(recursive=True)]
    for victim in victims:
        try:
            victim.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(victims, timeout=60)
    proc.wait()
    assert not alive, f"still running after SIGKILL: {alive}"


def _complete_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def test_the_readmes_torchrun_command_trains_on_two_cpu_processes(work):
    """README: `torchrun --standalone --nproc_per_node N -m sparse_transfer train TASK ...`, with
    no `--use_cpu`, on a machine without CUDA: both ranks train as ranks 0 and 1 of 2 (before
    the fix, the Trainer stayed single-process, both acted as rank 0 and rank 1 refused rank
    0's staging folder)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the CPU path is what is tested")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    form = re.search(r"`torchrun (--standalone --nproc_per_node) \d+ (-m sparse_transfer train) "
                     r"text-classification \.\.\.", readme)  # fmt: skip
    assert form, "the README's torchrun command changed"
    argv = _argv(work, "sst2", WORLD, work / "readme_2proc")
    argv.remove("--use_cpu")
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), *form[1].split(), str(WORLD), *form[2].split()[:2], *argv]
    assert command[1:6] == ["--standalone", "--nproc_per_node", "2", "-m", "sparse_transfer"]
    result = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=300)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-4000:]
    digests = {(int(m[1]), int(m[2])): m.groups()[2:] for m in DIGEST.finditer(text)}
    assert sorted(digests) == [(0, 2), (1, 2)], text[-3000:]
    assert digests[(0, 2)] == digests[(1, 2)]
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in text
    assert (work / "readme_2proc" / "model.safetensors").is_file()


def test_killed_two_process_run_resumes_on_one_process(work):
    """SIGKILL a 2-process GMP run after its step-2 checkpoint; finish it in 1 process."""
    import numpy as np

    out = work / "gmp_killed"
    staging = out.parent / f".{out.name}.partial"
    checkpoint = staging / "checkpoint-2"
    argv = _argv(work, "gmp", WORLD, out, "--save_strategy", "steps", "--save_steps", "2")
    argv.remove("no")  # the default --save_strategy value _argv appends
    argv.remove("--save_strategy")
    proc = subprocess.Popen(
        _torchrun(argv, work / "killed_logs"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        while not _complete_json(checkpoint / "trainer_state.json"):  # written last
            assert proc.poll() is None, "the 2-process run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.02)
    finally:
        _kill_tree(proc)
    assert not out.exists(), "the run finished before it could be killed"
    ckpt_zeros = _encoder_zeros(_weights(checkpoint))
    assert sum(ckpt_zeros.values()) > 0  # GMP had started pruning

    resumed = _run_one(
        work, "gmp", "--resume_from_checkpoint", str(checkpoint), out=work / "gmp_resumed"
    )
    reference = work / "gmp_1proc"
    if not (reference / "model.safetensors").exists():
        _run_one(work, "gmp")
    wr, w1 = _weights(resumed), _weights(reference)
    for key in _encoder_zeros(w1):
        # The masks the checkpoint held stay pruned, and the end result is the
        # uninterrupted single-process run's: same masks, same weights.
        assert not (_weights(checkpoint)[key] == 0)[wr[key] != 0].any(), key
        assert ((wr[key] == 0) == (w1[key] == 0)).all(), key
    for key in w1:
        np.testing.assert_allclose(wr[key], w1[key], atol=1e-4, rtol=0, err_msg=key)
    assert not out.exists()  # the killed run never published anything


def test_trainjob_node_entry_trains_then_publishes_with_a_manifest(work, tmp_path):
    """What each TrainJob process runs (here one process): train, then rank 0 publishes."""
    from sparse_transfer import storage
    from sparse_transfer.cli import trainjob_node as node

    published = tmp_path / "published"
    argv = _argv(work, "gmp", 1, tmp_path / "node_out")[2:]  # without "train TASK"
    assert node.main(["--output_uri", str(published), "text-classification", *argv]) == 0
    assert storage.is_published(str(published))
    manifest = json.loads((published / "manifest.json").read_text())
    names = {entry["path"] for entry in manifest["files"]}
    assert {"model.safetensors", "recipe.yaml", "sparsity.json", "run_summary.json"} <= names
