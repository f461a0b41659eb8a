"""Differential suite: this project's modifiers against real SparseML 1.8, step by step.

SparseML 1.8 pins its own torch/transformers stack, so it lives in its own venv
(`make sparseml-venv`); ``SPARSE_TRANSFER_SPARSEML_PYTHON`` names its
interpreter, as ``SPARSE_TRANSFER_DEEPSPARSE_PYTHON`` does for DeepSparse. Without
it the suite is skipped with that reason.

Both sides train the same tiny 90%-sparse BERT (hidden 32, dropout off) on the
same batches with the same AdamW groups, in a plain loop, through the recipes in
``sparseml_reference/recipes``: every modifier and every LR function the two
share. Recorded per step: the LR and weight decay of each param group, QAT and
observer state at the forward pass, the loss (distillation included) and the
exact zero positions of every encoder weight. The comparison demands equality,
except where a difference is one of the named `ALLOWANCES` (each documented in
docs/sparseml-differences.md); any other difference fails.

The pruning recipes train for one epoch with a decaying LR and then hold the
LR at 0 while pruning, so the zero positions of both sides are comparable
exactly: with weights frozen, the one-batch offset of scheduled changes does
not move a single weight.

Checked against the bugs it was built for (issue 16), by putting each back and
re-running our side against the same SparseML traces: GMP/oBS masks seeded
from the step-0 zeros fails gmp_sparse_start (532 of 1,024 query positions
differ at the first update) and obs_sparse_start; the old cyclic_linear formula
fails lr_cyclic (step 3: 2.56e-4 vs SparseML's 8e-6 = final_lr); ignoring
``grad_sampler_kwargs`` fails obs_sparse_start (1-2 positions per update).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.integration

ENV_PYTHON = "SPARSE_TRANSFER_SPARSEML_PYTHON"
HERE = Path(__file__).resolve().parent / "sparseml_reference"
RECIPES = HERE / "recipes"
STEPS_PER_EPOCH = 4
BATCH = 4
WATCH = r"^bert\.encoder\..*\.(query|key|value|dense)\.weight$"

#: Every deliberate difference, by name (docs/sparseml-differences.md). A check that
#: finds a difference not covered by one of these fails.
ALLOWANCES = {
    "one_batch_offset": "scheduled changes (mask updates, QAT start, observer freeze) reach "
    "our forward pass one batch before SparseML's: our step k equals SparseML's step k + 1",
    "weight_decay_groups": "SetWeightDecayModifier leaves the no-decay group (bias, LayerNorm) "
    "at 0; SparseML sets every group",
    "qat_numerics": "after QAT starts the losses differ: per-channel weight scales and "
    "quantized attention matmuls (ours) against SparseML's per-tensor weights",
}

#: recipe -> (epochs, teacher?, the allowances it may use)
CASES = {
    "lr_linear": (3, False, set()),
    "lr_cosine": (3, False, set()),
    "lr_cyclic": (3, False, set()),
    "lr_cyclic_partial": (3, False, set()),
    "set_lr_weight_decay": (2, False, {"weight_decay_groups"}),
    "gmp_sparse_start": (3, False, {"one_batch_offset"}),
    "gmp_block4": (3, False, {"one_batch_offset"}),
    "gmp_nm": (3, False, {"one_batch_offset"}),
    "obs_sparse_start": (3, False, {"one_batch_offset"}),
    "obs_block4": (3, False, {"one_batch_offset"}),
    "constant_distillation": (2, True, set()),
    "constant_qat": (3, False, {"one_batch_offset", "qat_numerics"}),
}


def _load_loop():
    spec = importlib.util.spec_from_file_location("sparseml_reference_loop", HERE / "_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_loop = _load_loop()


# --- this project's side: the events SparseTrainer fires, in a plain loop -------------------
def run_ours(spec: dict) -> None:
    """Drives `RecipeManager` exactly as `SparseTrainer` does (see training/trainer.py)."""
    from sparse_transfer.modifiers import Event
    from sparse_transfer.quantization import is_qat_prepared
    from sparse_transfer.recipe import load_recipe
    from sparse_transfer.training.manager import RecipeManager
    from sparse_transfer.training.state import TrainingState
    from sparse_transfer.training.teacher import TeacherRunner

    model, teacher, data, optimizer = _loop.setup(spec)
    manager = RecipeManager(load_recipe(spec["recipe"]))
    grad_batches = _loop.GradBatches(data)

    def grad_sampler(count: int, batch_size: int | None = None):
        stream = grad_batches.stream(batch_size or spec["batch_size"])
        model.train()
        for _ in range(count):
            batch = next(stream)
            labels = batch.pop("labels")
            model.zero_grad(set_to_none=True)
            logits = model(**batch)["logits"]
            torch.nn.functional.cross_entropy(logits, labels).backward()
            yield
        model.zero_grad(set_to_none=True)

    decay = {id(p) for p in optimizer.param_groups[0]["params"]}
    state = TrainingState(
        model=model,
        optimizer=optimizer,
        teacher=teacher,
        steps_per_epoch=spec["steps_per_epoch"],
        decay_param_ids=decay,
        grad_sampler=grad_sampler,
    )
    if teacher is not None:
        state.extras["teacher_forward"] = TeacherRunner(teacher, cache=False)
    manager.initialize(state)
    trace = _loop.Trace(model, optimizer, spec)
    spe = spec["steps_per_epoch"]
    for step in range(spec["steps"]):
        batch = data.batch(step, spec["batch_size"])
        model.train()
        state.global_step = step
        state.inputs = batch
        manager.event(Event.BATCH_START, state)
        qat = is_qat_prepared(model)
        trace.before_forward(step, qat, _all_observers_on(model) if qat else None)
        outputs = model(**batch)
        state.loss, state.outputs = outputs.loss, outputs
        manager.event(Event.LOSS_CALCULATED, state)
        loss = state.loss
        trace.loss(step, float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        manager.event(Event.OPTIMIZER_PRE_STEP, state)
        optimizer.step()
        state.global_step = step + 1
        manager.event(Event.OPTIMIZER_POST_STEP, state)
        manager.event(Event.BATCH_END, state)
        if (step + 1) % spe == 0:
            manager.event(Event.EPOCH_END, state)
        trace.after_step(step)
    manager.finalize(state)
    trace.write(Path(spec["out"]))


def _all_observers_on(model) -> bool:
    """Every observer still updates (the SparseML side records the same)."""
    from sparse_transfer.quantization.qat import activation_quants, qat_modules

    return all(m.weight_observer_enabled for m in qat_modules(model).values()) and all(
        aq.observer_enabled for _, aq in activation_quants(model)
    )


# --- the comparison -----------------------------------------------------------------------
class Diff:
    """Collects differences; each is either covered by a named allowance or a failure."""

    def __init__(self, case: str, allowed: set[str]):
        self.case = case
        self.allowed = allowed
        self.used: set[str] = set()
        self.failures: list[str] = []

    def allow(self, name: str) -> bool:
        assert name in ALLOWANCES, name
        if name in self.allowed:
            self.used.add(name)
            return True
        return False

    def fail(self, message: str) -> None:
        self.failures.append(f"{self.case}: {message}")


def _zero_sets(trace: dict, zeros: dict, step: int) -> list[np.ndarray]:
    return [zeros[f"s{step}_p{i}"] for i in range(len(trace["names"]))]


def _changes(trace: dict, zeros: dict) -> list[int]:
    """Steps after which some watched tensor gained zeros (mask updates; revived zeros,
    which AdamW produces before any pruning starts, are not updates)."""
    out = []
    for step in range(1, len(trace["steps"])):
        before, after = _zero_sets(trace, zeros, step - 1), _zero_sets(trace, zeros, step)
        if any((a & ~b).any() for a, b in zip(after, before, strict=True)):
            out.append(step)
    return out


def compare(case: str, ours_dir: Path, theirs_dir: Path, allowed: set[str]) -> Diff:
    diff = Diff(case, allowed)
    ours, our_zeros = _loop.read(ours_dir)
    theirs, their_zeros = _loop.read(theirs_dir)
    assert ours["names"] == theirs["names"]
    steps = len(ours["steps"])
    assert steps == len(theirs["steps"])
    o_steps, t_steps = ours["steps"], theirs["steps"]

    # 1. Learning rates: identical at every step (both compute step k's at epoch k / N).
    for k in range(steps):
        if not np.allclose(o_steps[k]["lr"], t_steps[k]["lr"], rtol=1e-6, atol=1e-12):
            diff.fail(f"step {k}: lr {o_steps[k]['lr']} vs SparseML {t_steps[k]['lr']}")

    # 2. Weight decay per group.
    for k in range(steps):
        o_wd, t_wd = o_steps[k]["weight_decay"], t_steps[k]["weight_decay"]
        if o_wd[0] != t_wd[0]:
            diff.fail(f"step {k}: decaying group weight_decay {o_wd[0]} vs {t_wd[0]}")
        if o_wd[1] != t_wd[1] and not (o_wd[1] == 0.0 and diff.allow("weight_decay_groups")):
            diff.fail(f"step {k}: no-decay group weight_decay {o_wd[1]} vs {t_wd[1]}")

    # 3. Mask updates: the same steps (up to the offset) and the exact zero positions.
    o_changes, t_changes = _changes(ours, our_zeros), _changes(theirs, their_zeros)
    offset = 1 if o_changes != t_changes and diff.allow("one_batch_offset") else 0
    if [c + offset for c in o_changes] != t_changes:
        diff.fail(f"mask updates after steps {o_changes} vs SparseML {t_changes}")
    first_update = o_changes[0] if o_changes else steps
    for k in range(steps - offset):
        shift = offset if k >= first_update else 0  # the same weights before any update
        o_z, t_z = _zero_sets(ours, our_zeros, k), _zero_sets(theirs, their_zeros, k + shift)
        for name, a, b in zip(ours["names"], o_z, t_z, strict=True):
            if not np.array_equal(a, b):
                diff.fail(
                    f"step {k}: {name}: {int(a.sum())} zeros vs SparseML {int(b.sum())} "
                    f"(step {k + shift}), {int((a != b).sum())} positions differ"
                )
                break

    # 4. QAT start and observer freeze: the same steps up to the offset.
    def first(steps_: list[dict], key: str, value) -> int | None:
        return next((s["step"] for s in steps_ if s[key] == value), None)

    for key, value in (("qat", True), ("observers", False)):
        o_first, t_first = first(o_steps, key, value), first(t_steps, key, value)
        if o_first == t_first:
            continue
        if o_first is not None and t_first == o_first + 1 and diff.allow("one_batch_offset"):
            continue
        diff.fail(f"first step with {key}={value}: ours {o_first}, SparseML {t_first}")

    # 5. Losses (task loss, or the distillation blend) equal until the first scheduled change
    #    that the offset makes one side see a batch earlier (or QAT numerics take over).
    horizon = steps
    if offset and o_changes:
        horizon = min(horizon, o_changes[0] + 1)
    qat_start = first(o_steps, "qat", True)
    if qat_start is not None and diff.allow("qat_numerics"):
        horizon = min(horizon, qat_start)
    for k in range(horizon):
        if abs(o_steps[k]["loss"] - t_steps[k]["loss"]) > 1e-5:
            diff.fail(f"step {k}: loss {o_steps[k]['loss']:.7f} vs {t_steps[k]['loss']:.7f}")
    return diff


# --- fixtures -------------------------------------------------------------------------------
def _sparseml_python() -> str:
    python = os.environ.get(ENV_PYTHON)
    if not python:
        reason = f"{ENV_PYTHON} is not set (build it with `make sparseml-venv`)"
        print(f"SKIP test_sparseml_diff: {reason}")
        pytest.skip(reason)
    if not Path(python).exists():
        pytest.fail(f"{ENV_PYTHON}={python} does not exist")
    return python


def _write_data(path: Path, tokenizer, rows: int = 16, length: int = 12) -> None:
    from sparse_transfer.embedded.fixtures import sentiment_rows

    data = sentiment_rows(rows)
    enc = tokenizer(
        [r["sentence"] for r in data], padding="max_length", truncation=True, max_length=length
    )
    np.savez(
        path,
        input_ids=np.asarray(enc["input_ids"], dtype=np.int64),
        attention_mask=np.asarray(enc["attention_mask"], dtype=np.int64),
        token_type_ids=np.asarray(enc["token_type_ids"], dtype=np.int64),
        labels=np.asarray([r["label"] for r in data], dtype=np.int64),
    )


def run_cases(python: str, root: Path, cases: list[str]) -> dict[str, tuple[Path, Path]]:
    """Runs `cases` through both sides under `root`; case -> (ours, SparseML) folders."""
    from transformers import AutoTokenizer

    from sparse_transfer.embedded.fixtures import make_tiny_bert

    model = make_tiny_bert(root / "student", hidden_size=32, sparsity=0.9, seed=0)
    teacher = make_tiny_bert(root / "teacher", hidden_size=32, seed=1)
    _write_data(root / "data.npz", AutoTokenizer.from_pretrained(str(model)))
    runs, out = [], {}
    for case in cases:
        epochs, with_teacher, _ = CASES[case]
        base = dict(
            model=str(model), teacher=str(teacher) if with_teacher else None,
            data=str(root / "data.npz"), recipe=str(RECIPES / f"{case}.yaml"), watch=WATCH,
            steps_per_epoch=STEPS_PER_EPOCH, batch_size=BATCH, steps=epochs * STEPS_PER_EPOCH,
            lr=1e-3, weight_decay=0.0,
        )  # fmt: skip
        ours, theirs = root / case / "ours", root / case / "sparseml"
        run_ours({**base, "out": str(ours)})
        runs.append({**base, "out": str(theirs)})
        out[case] = (ours, theirs)
    (root / "runs.json").write_text(json.dumps(runs))
    result = subprocess.run(
        [python, str(HERE / "run_sparseml.py"), str(root / "runs.json")],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=root,  # SparseML writes sparse_logs/ into the working directory
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    python = _sparseml_python()
    return run_cases(python, tmp_path_factory.mktemp("sparseml-diff"), list(CASES))


@pytest.mark.parametrize("case", list(CASES))
def test_same_as_sparseml_up_to_named_allowances(traces, case):
    ours, theirs = traces[case]
    diff = compare(case, ours, theirs, CASES[case][2])
    assert not diff.failures, "\n".join(diff.failures)
    # An allowance a case declares but never needs is stale: keep the list honest.
    assert diff.used == CASES[case][2], (case, diff.used)


def test_our_half_runs_without_sparseml(tmp_path):
    """Our side of the harness, in the default suite: CI has no SparseML venv, so without
    this the suite could break unseen (it did once, on a moved import). The 2:4 case is
    checked for what it must produce: from the first mask update on (epoch 1), exactly 2
    zeros in every group of 4 consecutive input weights of every watched tensor."""
    from transformers import AutoTokenizer

    from sparse_transfer.embedded.fixtures import make_tiny_bert

    model = make_tiny_bert(tmp_path / "student", hidden_size=32, sparsity=0.9, seed=0)
    _write_data(tmp_path / "data.npz", AutoTokenizer.from_pretrained(str(model)))
    epochs = CASES["gmp_nm"][0]
    spec = dict(
        model=str(model), teacher=None, data=str(tmp_path / "data.npz"),
        recipe=str(RECIPES / "gmp_nm.yaml"), watch=WATCH, steps_per_epoch=STEPS_PER_EPOCH,
        batch_size=BATCH, steps=epochs * STEPS_PER_EPOCH, lr=1e-3, weight_decay=0.0,
        out=str(tmp_path / "ours"),
    )  # fmt: skip
    run_ours(spec)
    trace, zeros = _loop.read(tmp_path / "ours")
    assert len(trace["steps"]) == epochs * STEPS_PER_EPOCH and trace["names"]
    for step in range(STEPS_PER_EPOCH, epochs * STEPS_PER_EPOCH):
        for i, name in enumerate(trace["names"]):
            z = zeros[f"s{step}_p{i}"]
            per_group = z.reshape(z.shape[0], -1, 4).sum(-1)
            assert (per_group == 2).all(), (step, name)


def test_allowances_are_documented():
    text = (Path(__file__).resolve().parents[2] / "docs" / "sparseml-differences.md").read_text()
    for name in ALLOWANCES:
        assert f"`{name}`" in text, name
