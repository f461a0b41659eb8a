"""DistillationModifier: the loss equals the formula, computed independently here."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from sparse_transfer.errors import DataError, RecipeError
from sparse_transfer.modifiers.distillation import check_label_alignment, distillation_loss, kd_loss
from tests.unit._train_utils import make_trainer, mod, tiny_dataset, tiny_model


def _kl(p: list[float], q: list[float]) -> float:
    """KL(p || q) by hand."""
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def _softmax(x: list[float]) -> list[float]:
    m = max(x)
    e = [math.exp(v - m) for v in x]
    return [v / sum(e) for v in e]


def test_sequence_loss_equals_formula():
    student = torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.8, -1.2]])
    teacher = torch.tensor([[2.0, 0.1, -0.3], [-0.4, 1.5, 0.0]])
    task_loss = torch.tensor(0.7)
    T, h = 2.0, 0.6
    kd = (
        sum(
            _kl(_softmax([v / T for v in t]), _softmax([v / T for v in s]))
            for s, t in zip(student.tolist(), teacher.tolist(), strict=True)
        )
        / 2
        * T**2
    )
    expected = (1 - h) * 0.7 + h * kd
    got = distillation_loss(task_loss, {"logits": student}, {"logits": teacher}, h, T, ["logits"])
    assert float(got) == pytest.approx(expected, rel=1e-5)
    hard = distillation_loss(
        task_loss, {"logits": student}, {"logits": teacher}, 1.0, T, ["logits"]
    )
    assert float(hard) == pytest.approx(kd, rel=1e-5)


def test_token_level_loss_averages_real_tokens_only():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    T = 1.5
    per_token = []
    for b in range(2):
        for t in range(3):
            if mask[b, t]:
                p = _softmax([v / T for v in teacher[b, t].tolist()])
                q = _softmax([v / T for v in student[b, t].tolist()])
                per_token.append(_kl(p, q))
    expected = sum(per_token) / len(per_token) * T**2
    got = kd_loss(student, teacher, T, "logits", mask)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # Garbage in padded positions changes nothing.
    student2 = student.clone()
    student2[0, 2] = 100.0
    assert float(kd_loss(student2, teacher, T, "logits", mask)) == pytest.approx(expected, rel=1e-5)


def test_span_loss_softmax_over_real_positions():
    student = torch.tensor([[0.5, 1.0, -2.0, 7.0]])
    teacher = torch.tensor([[1.0, 0.0, 0.5, -9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    T = 2.0
    p = _softmax([v / T for v in teacher[0, :3].tolist()])
    q = _softmax([v / T for v in student[0, :3].tolist()])
    expected = _kl(p, q) * T**2
    got = kd_loss(student, teacher, T, "start_logits", mask)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_label_order_mismatch_is_rejected(tmp_path):
    student, _ = tiny_model(tmp_path)
    teacher = copy.deepcopy(student)
    student.config.id2label = {0: "negative", 1: "positive"}
    teacher.config.id2label = {0: "positive", 1: "negative"}
    with pytest.raises(DataError, match="label order"):
        check_label_alignment(student, teacher)
    teacher.config.id2label = dict(student.config.id2label)
    check_label_alignment(student, teacher)


def test_trainer_loss_is_the_formula_and_teacher_is_cached(tmp_path):
    student, tok = tiny_model(tmp_path, seed=0)
    teacher, _ = tiny_model(tmp_path, seed=1)
    for m in student.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    dataset = tiny_dataset(tok, 8)
    recipe = [
        mod("EpochRangeModifier", start_epoch=0.0, end_epoch=2.0),
        mod("DistillationModifier", hardness=0.7, temperature=2.0, distill_output_keys=["logits"]),
    ]
    trainer = make_trainer(tmp_path, student, dataset, recipe=recipe, teacher=teacher)
    batch = {k: torch.stack([dataset[i][k] for i in range(4)]) for k in dataset[0]}
    trainer._initialize_recipe()
    student.train()
    loss = trainer.compute_loss(student, dict(batch))
    with torch.no_grad():
        out = student(**batch)
        t_logits = teacher(**{k: v for k, v in batch.items() if k != "labels"}).logits
    s = torch.log_softmax(out.logits / 2.0, -1)
    t = torch.softmax(t_logits / 2.0, -1)
    kd = (t * (t.log() - s)).sum() / 4 * 4.0
    assert float(loss.detach()) == pytest.approx(float(0.3 * out.loss + 0.7 * kd), rel=1e-5)
    assert teacher.training is False
    assert all(not p.requires_grad for p in teacher.parameters())
    # Two epochs: the second is served entirely from the teacher cache.
    trainer2 = make_trainer(tmp_path, student, dataset, recipe=recipe, teacher=teacher)
    trainer2.train()
    runner = trainer2.sparse_state.extras["teacher_forward"]
    assert runner.misses == 8 and runner.hits == 8


def test_distillation_without_teacher_is_an_error(tmp_path):
    model, tok = tiny_model(tmp_path)
    recipe = [mod("DistillationModifier", hardness=1.0)]
    trainer = make_trainer(tmp_path, model, tiny_dataset(tok, 4), recipe=recipe)
    with pytest.raises(RecipeError, match="no teacher"):
        trainer.train()
