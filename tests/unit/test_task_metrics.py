"""Task metric functions against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sparse_transfer.tasks.masked_lm import MaskedLMTask, mlm_metrics
from sparse_transfer.tasks.question_answering import (
    exact_match_score,
    f1_score,
    normalize_answer,
    squad_scores,
)
from sparse_transfer.tasks.text_classification import (
    classification_metrics,
    multi_label_metrics,
    regression_metrics,
)
from sparse_transfer.tasks.token_classification import logits_to_tags, seqeval_metrics
from sparse_transfer.tasks.trainer_glue import rename_split_metrics


# -- SQuAD ----------------------------------------------------------------------------
def test_squad_normalisation_lowercases_and_strips_punctuation_articles_whitespace():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("  Theory of the  Atom. ") == "theory of atom"
    assert normalize_answer("the") == ""


def test_squad_exact_match_and_f1_single_answer():
    assert exact_match_score("The Cat!", "cat") == 1.0
    assert exact_match_score("a cat", "cats") == 0.0
    # pred [cat, sat, on, mat] vs gold [cat, on, mat]: P = 3/4, R = 1, F1 = 6/7
    assert f1_score("the cat sat on the mat", "cat on mat") == pytest.approx(6 / 7)
    assert f1_score("dog", "cat") == 0.0


def test_squad_scores_take_the_best_gold_answer_and_average_in_percent():
    predictions = {"q1": "Paris", "q2": "in London"}
    references = {"q1": ["paris france", "Paris"], "q2": ["London", "the city of London"]}
    scores = squad_scores(predictions, references)
    # q1: EM 1, F1 1. q2: EM 0; F1 max(2/3 vs "london", 0.4 vs "city of london") = 2/3.
    assert scores["exact_match"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_squad_v2_scores_unanswerable_questions_with_the_empty_answer():
    predictions = {"a": "london", "b": "", "c": "paris"}
    references = {"a": ["London"], "b": [], "c": []}
    scores = squad_scores(predictions, references, version_2=True)
    assert scores["exact"] == pytest.approx(200 / 3)
    assert scores["HasAns_exact"] == 100.0 and scores["HasAns_total"] == 1.0
    assert scores["NoAns_exact"] == 50.0 and scores["NoAns_total"] == 2.0
    assert scores["total"] == 3.0


# -- seqeval ----------------------------------------------------------------------------
def test_seqeval_entity_matching_counts_a_partial_entity_as_wrong():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O"]]
    m = seqeval_metrics(true, pred, entity_level=True)
    # entities: true {PER 0-1, LOC 3, ORG 0}; pred {PER 0-0, LOC 3, ORG 0}: 2 of 3 match.
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(5 / 6)  # one token wrong of six
    assert m["PER_f1"] == 0.0 and m["LOC_f1"] == 1.0


def test_token_logits_skip_ignored_positions():
    labels_list = ["O", "B-PER", "I-PER"]
    label_ids = np.array([[-100, 1, -100, 0, -100]])
    logits = np.full((1, 5, 3), -1.0)
    for pos, cls in enumerate([2, 1, 2, 0, 2]):
        logits[0, pos, cls] = 1.0
    true, pred = logits_to_tags(logits, label_ids, labels_list)
    assert true == [["B-PER", "O"]] and pred == [["B-PER", "O"]]


# -- text classification ----------------------------------------------------------------
def test_multi_label_micro_macro_f1_and_avg_f1():
    labels = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]], dtype=float)
    preds = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0]])
    logits = np.where(preds == 1, 2.0, -2.0)
    m = multi_label_metrics(logits, labels, ["a", "b", "c"])
    # per label F1: a 1, b 2/3 (tp1 fn1), c 0 (fp1 fn1); micro: tp3 fp1 fn2 -> 2/3
    assert m["f1_a"] == 1.0 and m["f1_b"] == pytest.approx(2 / 3) and m["f1_c"] == 0.0
    assert m["macro_f1"] == pytest.approx(5 / 9)
    assert m["micro_f1"] == pytest.approx(2 / 3)
    assert m["avgF1"] == m["macro_f1"]


def test_multi_label_threshold_applies_to_the_sigmoid():
    logits = np.array([[math.log(0.4 / 0.6), math.log(0.8 / 0.2)]])
    labels = np.array([[1.0, 1.0]])
    assert multi_label_metrics(logits, labels, threshold=0.3)["micro_f1"] == 1.0
    assert multi_label_metrics(logits, labels, threshold=0.5)["f1_0"] == 0.0


def test_regression_pearson_spearman_for_stsb():
    m = regression_metrics(np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([1.0, 2.0, 3.0, 5.0]))
    assert m["pearson"] == pytest.approx(6.5 / math.sqrt(5 * 8.75))
    assert m["spearmanr"] == pytest.approx(1.0)
    assert m["mse"] == pytest.approx(0.25)
    assert m["combined_score"] == pytest.approx((m["pearson"] + 1.0) / 2)


def test_glue_classification_metrics():
    labels = np.array([1, 1, 0, 0])
    logits = np.eye(2)[[1, 0, 0, 0]]
    plain = classification_metrics(logits, labels)
    assert plain["accuracy"] == 0.75 and "f1" not in plain and "combined_score" not in plain
    cola = classification_metrics(logits, labels, "cola")
    assert cola["matthews_correlation"] == pytest.approx(2 / math.sqrt(12))
    mrpc = classification_metrics(logits, labels, "mrpc")
    assert mrpc["f1"] == pytest.approx(2 / 3) and mrpc["accuracy"] == 0.75
    assert mrpc["combined_score"] == pytest.approx((0.75 + 2 / 3) / 2)


def test_mnli_mismatched_metrics_get_the_run_glue_suffix():
    metrics = {"eval_accuracy": 0.5, "eval_loss": 1.0}
    assert rename_split_metrics(metrics, "validation") == metrics
    assert rename_split_metrics(metrics, "validation_mismatched") == {
        "eval_accuracy_mm": 0.5,
        "eval_loss_mm": 1.0,
    }


# -- masked LM ----------------------------------------------------------------------------
def test_mlm_accuracy_and_perplexity_from_reduced_logits():
    logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]]))
    labels = np.array([[0, 2, -100]])
    task = MaskedLMTask.__new__(MaskedLMTask)
    reduced = task.reduce_batch({"logits": logits}, labels)["logits"]
    m = mlm_metrics(reduced, labels)
    assert m["accuracy"] == 0.5  # position 0 right, position 1 predicts 1 not 2
    assert m["perplexity"] == pytest.approx(
        math.exp(-(math.log(0.5) + math.log(0.1)) / 2), rel=1e-5
    )
