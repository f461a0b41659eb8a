"""Issue 26, round two of a hostile user: the zoo, model cards and the CLI's error handler.

Items 1 (card YAML bombs), 4 (symlinks out of a pushed folder), 5 (unlisted files in
a local entry), 7 (a training output pushed without weights), 11 (OS errors, deep
nesting, Ctrl-C) and the zoo/config parts of 12 (NaN in cards, --min_sparsity nan,
recipe_args NaN, pull onto another entry, cache hits re-verified). No torch needed:
the trained outputs are faked as in test_zoo.py.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from sparse_transfer import storage, zoo
from sparse_transfer.cli import main
from sparse_transfer.errors import ZooError
from tests.integration.test_zoo import SST2, TEACHER, UPSTREAM, _trained_output
from tests.unit.test_cli_errors import one_error_line

pytestmark = pytest.mark.integration


@pytest.fixture
def local_zoo(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "zoo"
    monkeypatch.setenv("SPARSE_TRANSFER_ZOO", str(root))
    monkeypatch.setenv("SPARSE_TRANSFER_CACHE", str(tmp_path / "cache"))
    return root


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _publish_card(root: Path, stub: str, front: str) -> Path:
    """An entry whose model.md front matter is `front`, published as a hostile pusher would
    (straight through `upload_dir`, which is what S3 write access gives anyone)."""
    folder = root.parent / f"raw-{abs(hash(front))}"
    (folder / "training").mkdir(parents=True)
    (folder / "training" / "config.json").write_text("{}")
    (folder / "model.md").write_text(f"---\n{front}\n---\n\nbody\n")
    uri = zoo.entry_uri(stub, root)
    storage.upload_dir(folder, uri)
    return Path(uri)


# -- item 1: a 503-byte card must not take the zoo down -------------------------------------
ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{n}: &{n} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
    for p, n in zip("abcdef", "bcdefg", strict=True)
)


@pytest.mark.parametrize(
    "front", [ALIAS_BOMB, "stub: " + "[" * 5000, "task: [1, 2]", "sparsity: .nan"],
    ids=["alias-bomb", "deep-nesting", "task-not-text", "nan-sparsity"],
)  # fmt: skip
def test_a_hostile_card_costs_only_its_own_entry(local_zoo, tmp_path, capsys, front):
    zoo.push(_trained_output(tmp_path / "good"), UPSTREAM)
    _publish_card(local_zoo, TEACHER, front)
    start = time.perf_counter()
    assert main(["zoo", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["stub"] for e in listed] == [UPSTREAM]  # the bad entry is skipped, with a warning
    assert main(["zoo", "search", "--min_sparsity", "0.5", "--json"]) == 0
    assert [e["stub"] for e in json.loads(capsys.readouterr().out)] == [UPSTREAM]
    assert main(["zoo", "show", TEACHER, "--json"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "model.md" in line, line
    assert time.perf_counter() - start < 10.0


def test_the_card_loader_is_the_guarded_one():
    from sparse_transfer.zoo import parse_card

    with pytest.raises(ZooError, match="expands to more than 100000 values"):
        parse_card(f"---\n{ALIAS_BOMB}---\nbody\n")
    with pytest.raises(ZooError, match="duplicate key 'task'"):
        parse_card("---\ntask: a\ntask: b\n---\n")


# -- item 4: symlinks leaving the pushed folder -------------------------------------------------
def test_push_refuses_links_out_of_the_folder_and_dangling_ones(local_zoo, tmp_path, capsys):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "credentials").write_text("aws_secret_access_key = hunter2\n")
    run = _trained_output(tmp_path / "run")
    (run / "credentials").symlink_to(Path("..") / "secrets" / "credentials")
    assert main(["zoo", "push", str(run), SST2]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "credentials" in line and "symbolic link" in line and "outside" in line, line
    (run / "credentials").unlink()
    (run / "tokenizer.json").symlink_to(tmp_path / "nowhere.json")
    assert main(["zoo", "push", str(run), SST2]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "tokenizer.json" in line and "dangling" in line, line
    assert not local_zoo.exists() or not storage.list_published(local_zoo)
    (run / "tokenizer.json").unlink()
    (run / "vocab-link.txt").symlink_to("vocab.txt")  # a link inside the folder is fine
    assert main(["zoo", "push", str(run), SST2]) == 0


# -- item 7: a training output with a recipe/ subfolder but no weights ----------------------------
def test_push_refuses_an_entry_without_what_its_kind_needs(local_zoo, tmp_path, capsys):
    good = _trained_output(tmp_path / "good")
    zoo.push(good, SST2)
    published = _tree(Path(zoo.entry_uri(SST2)))
    broken = _trained_output(tmp_path / "broken")
    (broken / "model.safetensors").unlink()
    (broken / "recipe").mkdir()
    (broken / "recipe" / "recipe.yaml").write_text("version: 1.1.0\nmodifiers: []\n")
    assert main(["zoo", "push", str(broken), SST2, "--force"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "no weights" in line and "training" in line, line
    assert _tree(Path(zoo.entry_uri(SST2))) == published  # the good entry stays
    dep = tmp_path / "dep-entry"
    (dep / "deployment").mkdir(parents=True)
    (dep / "deployment" / "config.json").write_text("{}")
    (dep / "model.md").write_text("---\ntask: text-classification\n---\n")
    assert main(["zoo", "push", str(dep), TEACHER]) == 2
    assert "model.onnx" in one_error_line(capsys.readouterr().err)


# -- item 5: files added to a local entry after publishing are not read --------------------------
def test_unlisted_files_in_a_local_entry_are_not_used(local_zoo, tmp_path):
    entry = Path(zoo.push(_trained_output(tmp_path / "run"), SST2))
    (entry / "training" / "special_tokens_map.json").write_text('{"unk_token": "[PAD]"}')
    model = Path(zoo.resolve(SST2, "model"))
    assert (model / "config.json").is_file() and (model / "model.safetensors").is_file()
    assert not (model / "special_tokens_map.json").exists()
    assert sorted(p.name for p in model.iterdir() if p.name != "manifest.json") == sorted(
        f.path.split("/", 1)[1]
        for f in storage.read_manifest(entry).files
        if f.path.startswith("training/")
    )


# -- item 12: NaN in cards and filters; pull onto another entry; cache hits -----------------------
def test_non_finite_card_values_and_filters_are_refused(local_zoo, tmp_path, capsys):
    run = _trained_output(tmp_path / "run")
    for value, spelled in (
        ("NaN", "NaN"),
        ("Infinity", "infinity"),
        ('{"f1": -Infinity}', "-infinity"),
    ):
        assert main(["zoo", "push", str(run), SST2, "--card", f"metrics={value}"]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "metrics" in line and f"is {spelled}" in line, line
    assert not local_zoo.exists() or not storage.list_published(local_zoo)
    assert main(["zoo", "push", str(run), SST2, "--card", "score=NaN"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "score" in line and "NaN" in line, line
    for flag in ("--min_sparsity", "--max_sparsity"):
        for bad in ("nan", "inf", "1.5"):
            assert main(["zoo", "search", flag, bad]) == 2
            line = one_error_line(capsys.readouterr().err)
            assert f"{flag} " in line and "0..1" in line, line


def test_run_config_recipe_args_nan_is_refused(tmp_path, capsys):
    from sparse_transfer.errors import PipelineError
    from sparse_transfer.pipeline.config import load_run_config

    path = tmp_path / "run.yaml"
    path.write_text("pipeline: sparse_transfer\nparameters:\n  recipe_args: '{\"init_lr\": NaN}'\n")
    with pytest.raises(PipelineError, match=r"parameter 'recipe_args'.*NaN"):
        load_run_config(path)


def test_pull_force_never_overwrites_a_published_entry(local_zoo, tmp_path, capsys):
    zoo.push(_trained_output(tmp_path / "a"), SST2)
    zoo.push(_trained_output(tmp_path / "b", acc=0.5), TEACHER)
    entry_b = Path(zoo.entry_uri(TEACHER))
    before = _tree(entry_b)
    assert main(["zoo", "pull", SST2, str(entry_b), "--force"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "not a sparse-transfer download" in line and str(entry_b) in line, line
    assert _tree(entry_b) == before
    pulled = tmp_path / "pulled"
    assert main(["zoo", "pull", TEACHER, str(pulled)]) == 0
    assert main(["zoo", "pull", SST2, str(pulled), "--force"]) == 0  # a download: replaceable


def test_cache_hits_are_re_verified(tmp_path, monkeypatch, s3_bucket):
    monkeypatch.setenv("SPARSE_TRANSFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPARSE_TRANSFER_ZOO", f"s3://{s3_bucket}/zoo")
    zoo.push(_trained_output(tmp_path / "run"), SST2)
    first = Path(zoo.resolve(SST2, "model"))
    weights = first / "model.safetensors"
    original = weights.read_bytes()
    os.chmod(weights, 0o644)
    weights.write_bytes(original[:-4] + b"\0\0\0\0")  # same size, new content
    again = Path(zoo.resolve(SST2, "model"))
    assert (again / "model.safetensors").read_bytes() == original
    (again / "added_tokens.json").write_text("{}")
    third = Path(zoo.resolve(SST2, "model"))
    assert not (third / "added_tokens.json").exists()


# -- item 11: OS errors and deep nesting are one line; Ctrl-C is 130 ------------------------------
def test_a_too_long_name_is_one_line(local_zoo, tmp_path, capsys):
    zoo.push(_trained_output(tmp_path / "run"), SST2)
    target = tmp_path / ("x" * 300)
    assert main(["zoo", "pull", SST2, str(target)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "x" * 300 in line and "too long" in line, line


def test_deep_recipe_args_are_one_line(capsys):
    for depth in (500, 950, 5000):
        args = '{"num_epochs": ' + "[" * depth + "1" + "]" * depth + "}"
        assert main(["recipe", "check", "sst2_pruned90_quant", "--recipe_args", args]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "recipe_args" in line and "nested" in line, line


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_os_errors_from_any_command_are_one_line(local_zoo, tmp_path, capsys, monkeypatch, code):
    """Where the disk says no (any command: the handler is the CLI's, not a command's)."""
    zoo.push(_trained_output(tmp_path / "run"), SST2)
    target = tmp_path / "dest"

    def refuse(*_args, **_kwargs):
        raise OSError(code, os.strerror(code), str(target / "training" / "model.safetensors"))

    monkeypatch.setattr("shutil.copyfile", refuse)
    assert main(["zoo", "pull", SST2, str(target)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(target / "training" / "model.safetensors") in line, line
    assert errno.errorcode[code] in line, line
    assert not target.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".dest")]  # no leftovers


@pytest.fixture
def read_only_mount(tmp_path):
    """A real read-only file system (a tmpfs mounted ro), where this user may mount one."""
    folder = tmp_path / "ro"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,ro", "none", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_target_is_one_line(local_zoo, tmp_path, capsys, read_only_mount):
    run = _trained_output(tmp_path / "run")
    zoo.push(run, SST2)
    assert main(["zoo", "pull", SST2, str(read_only_mount / "pulled")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(read_only_mount) in line and "EROFS" in line, line
    assert main(["zoo", "push", str(run), TEACHER, "--zoo", str(read_only_mount / "zoo")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(read_only_mount) in line and "EROFS" in line, line


def test_ctrl_c_is_one_line_and_130(local_zoo, monkeypatch, capsys):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo, "list_entries", interrupted)
    assert main(["zoo", "list"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines() == [
        "sparse-transfer: interrupted (Ctrl-C)"
    ]


def test_ctrl_c_on_a_real_process(tmp_path):
    """SIGINT to a running command: exit 130, one line on stderr.

    The signal goes once the command is inside its work (the patched listing says so), so a
    loaded machine cannot move it into the imports. The child starts with Python's own SIGINT
    handler, as in a terminal: a shell without job control starts `&` jobs with SIGINT ignored
    (POSIX, Shell Command Language 2.9.3 "Asynchronous Lists"), Python keeps an ignored SIGINT
    ignored, and two CI runs started that way saw the signal vanish. The work runs in short
    steps, as real commands do: a SIGINT the kernel hands to another thread (numpy's BLAS pool)
    is acted on at the main thread's next bytecode. Should the process ever hang, it is aborted
    with faulthandler on and its stacks are the failure message.
    """
    import signal
    import sys

    env = {**os.environ, "SPARSE_TRANSFER_ZOO": str(tmp_path / "zoo"),
           "SPARSE_TRANSFER_CACHE": str(tmp_path / "cache"), "PYTHONFAULTHANDLER": "1"}  # fmt: skip
    script = (
        "import signal, time, sparse_transfer.zoo as z\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "def slow(*a, **k):\n    print('ready', flush=True)\n"
        "    for _ in range(1200):\n        time.sleep(0.05)\n"
        "z.list_entries = slow\n"
        "from sparse_transfer.cli import main\nimport sys\n"
        "sys.exit(main(['zoo', 'list']))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"no exit 60 s after SIGINT; stacks:\n{err[-4000:]}")
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "sparse-transfer: interrupted (Ctrl-C)" and (
        "Traceback" not in err
    )


# -- beyond the issue: a named pipe in the pushed folder would hang the copy ---------------------
def test_push_refuses_a_named_pipe(local_zoo, tmp_path, capsys):
    run = _trained_output(tmp_path / "run")
    os.mkfifo(run / "pipe")
    assert main(["zoo", "push", str(run), SST2]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "pipe is not a regular file" in line, line


def test_push_force_never_replaces_a_folder_with_a_copied_manifest(local_zoo, tmp_path, capsys):
    """A user's folder where an entry would go, holding a manifest.json copied from an entry."""
    zoo.push(_trained_output(tmp_path / "a"), SST2)
    spot = Path(zoo.entry_uri(TEACHER))
    (spot / "thesis").mkdir(parents=True)
    (spot / "thesis" / "chapter1.tex").write_text("mine")
    (spot / "manifest.json").write_bytes((Path(zoo.entry_uri(SST2)) / "manifest.json").read_bytes())
    before = _tree(spot)
    assert main(["zoo", "push", str(tmp_path / "a"), TEACHER, "--force"]) == 2
    assert "not a sparse-transfer published directory" in one_error_line(capsys.readouterr().err)
    assert _tree(spot) == before
    assert main(["zoo", "push", str(tmp_path / "a"), SST2, "--force"]) == 0  # a real entry: yes
