"""Per-class metrics and class weights for imbalanced single-label classification (issue 24.1).

Every number is checked against scikit-learn (the reference users compare with)
or computed by hand; the loss against `torch.nn.functional.cross_entropy`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_recall_fscore_support

from sparse_transfer.tasks.class_metrics import metric_label, single_label_metrics
from sparse_transfer.tasks.text_classification import classification_metrics
from tests.unit._train_utils import make_trainer, mod, tiny_dataset, tiny_model


def _sklearn_check(metrics, labels, preds, names):
    p, r, f, s = precision_recall_fscore_support(
        labels, preds, labels=list(range(len(names))), zero_division=0
    )
    for i, name in enumerate(names):
        assert metrics[f"precision_{name}"] == pytest.approx(p[i])
        assert metrics[f"recall_{name}"] == pytest.approx(r[i])
        assert metrics[f"f1_{name}"] == pytest.approx(f[i])
        assert metrics[f"support_{name}"] == s[i]
    assert metrics["macro_f1"] == pytest.approx(f1_score(labels, preds, average="macro"))
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, preds))


def test_binary_90_10_majority_predictor():
    labels = np.array([0] * 90 + [1] * 10)
    preds = np.zeros(100, dtype=int)
    m = single_label_metrics(preds, labels, ["ham", "spam"])
    assert m["accuracy"] == 0.9
    assert m["majority_class_share"] == 0.9
    assert m["f1_spam"] == 0.0 and m["recall_spam"] == 0.0 and m["precision_spam"] == 0.0
    assert m["f1_ham"] == pytest.approx(2 * 0.9 / 1.9)
    assert m["macro_f1"] == pytest.approx(0.9 / 1.9)
    assert m["balanced_accuracy"] == 0.5
    assert m["positive_f1"] == 0.0 and m["minority_f1"] == 0.0
    _sklearn_check(m, labels, preds, ["ham", "spam"])


def test_binary_90_10_good_predictor_positive_and_minority():
    # spam is id 0 here, so the minority class is not the positive (id 1) class.
    labels = np.array([0] * 10 + [1] * 90)
    preds = labels.copy()
    preds[:2] = 1  # two spam rows missed
    preds[10:13] = 0  # three ham rows called spam
    m = single_label_metrics(preds, labels, ["spam", "ham"])
    _sklearn_check(m, labels, preds, ["spam", "ham"])
    assert m["minority_f1"] == m["f1_spam"] == pytest.approx(2 * 8 / (2 * 8 + 2 + 3))
    assert m["positive_f1"] == m["f1_ham"] == pytest.approx(2 * 87 / (2 * 87 + 3 + 2))


def test_three_classes_80_15_5():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    preds = np.where(rng.random(100) < 0.8, labels, rng.integers(0, 3, 100))
    names = ["neutral", "positive", "negative"]
    m = single_label_metrics(preds, labels, names)
    _sklearn_check(m, labels, preds, names)
    assert m["accuracy"] == pytest.approx(float((preds == labels).mean()))
    assert m["majority_class_share"] == 0.8
    assert "positive_f1" not in m and "minority_f1" not in m  # binary only
    assert [m[f"support_{n}"] for n in names] == [80.0, 15.0, 5.0]


def test_glue_metrics_keep_their_names_and_add_the_per_class_ones():
    labels = np.array([1, 1, 0, 0])
    logits = np.eye(2)[[1, 0, 0, 0]]
    mrpc = classification_metrics(logits, labels, "mrpc", ["not_equivalent", "equivalent"])
    assert mrpc["f1"] == pytest.approx(2 / 3) == pytest.approx(mrpc["positive_f1"])
    assert mrpc["combined_score"] == pytest.approx((0.75 + 2 / 3) / 2)
    assert mrpc["f1_equivalent"] == pytest.approx(2 / 3)
    assert mrpc["f1_not_equivalent"] == pytest.approx(0.8)


def test_label_names_become_safe_metric_keys():
    assert metric_label("very positive!") == "very_positive"
    assert metric_label("a/b c") == "a_b_c"
    assert metric_label("5") == "5"


def _trainer(tmp_path, recipe=None, teacher=None, weights=None):
    student, tok = tiny_model(tmp_path, seed=0)
    for m in student.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    dataset = tiny_dataset(tok, 8)
    trainer = make_trainer(tmp_path, student, dataset, recipe=recipe, teacher=teacher)
    trainer.class_weights = None if weights is None else torch.tensor(weights)
    batch = {k: torch.stack([dataset[i][k] for i in range(4)]) for k in dataset[0]}
    return trainer, student, batch


def test_class_weighted_loss_is_torch_weighted_cross_entropy(tmp_path):
    weights = [0.25, 3.0]
    trainer, student, batch = _trainer(tmp_path, weights=weights)
    student.train()
    loss = trainer.compute_loss(student, dict(batch))
    with torch.no_grad():
        logits = student(**batch).logits
    nll = -torch.log_softmax(logits, -1)[torch.arange(4), batch["labels"]]
    w = torch.tensor(weights)[batch["labels"]]
    expected = float((w * nll).sum() / w.sum())  # torch's weighted mean
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    ref = torch.nn.functional.cross_entropy(logits, batch["labels"], weight=torch.tensor(weights))
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-6)
    assert len(set(batch["labels"].tolist())) == 2  # both classes in the batch: weights matter


def test_class_weights_combine_with_distillation(tmp_path):
    teacher, _ = tiny_model(tmp_path, seed=1)
    recipe = [
        mod("EpochRangeModifier", start_epoch=0.0, end_epoch=2.0),
        mod("DistillationModifier", hardness=0.7, temperature=2.0, distill_output_keys=["logits"]),
    ]
    weights = [2.0, 0.5]
    trainer, student, batch = _trainer(tmp_path, recipe, teacher, weights)
    trainer._initialize_recipe()
    student.train()
    loss = trainer.compute_loss(student, dict(batch))
    with torch.no_grad():
        logits = student(**batch).logits
        t_logits = teacher(**{k: v for k, v in batch.items() if k != "labels"}).logits
    task = torch.nn.functional.cross_entropy(logits, batch["labels"], weight=torch.tensor(weights))
    s = torch.log_softmax(logits / 2.0, -1)
    t = torch.softmax(t_logits / 2.0, -1)
    kd = (t * (t.log() - s)).sum() / 4 * 2.0**2  # batchmean KL times T^2 (unweighted)
    assert float(loss.detach()) == pytest.approx(float(0.3 * task + 0.7 * kd), rel=1e-5)
