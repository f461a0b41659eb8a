"""PerLayerDistillationModifier: SparseML's feature-imitation loss, checked by hand."""

from __future__ import annotations

import pytest
import torch

from sparse_transfer.errors import RecipeError
from sparse_transfer.modifiers.base import FieldError
from sparse_transfer.modifiers.per_layer_distillation import layer_loss
from sparse_transfer.recipe import load_recipe
from sparse_transfer.training.manager import RecipeManager
from tests.unit._train_utils import make_trainer, mod, tiny_dataset, tiny_model

LAYERS = ["bert.encoder.layer.0.output", "bert.encoder.layer.1.output"]


def test_layer_loss_is_normalised_mse():
    s = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    t = torch.tensor([[0.5, 2.5], [1.0, -1.0]])
    mse = (0.25 + 0.25 + 1.0 + 0.0) / 4
    magnitude = (0.25 + 6.25 + 1.0 + 1.0) / 4
    assert float(layer_loss(s, t, False, 1e-6)) == pytest.approx(mse)
    assert float(layer_loss(s, t, True, 1e-6)) == pytest.approx(mse / (magnitude + 1e-6))


def _no_dropout(model):
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


def _hidden(model, batch, names):
    """Each named module's output, read with our own hooks."""
    seen, modules = {}, dict(model.named_modules())
    handles = [
        modules[n].register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o.detach()))
        for n in names
    ]
    with torch.no_grad():
        out = model(**batch)
    for h in handles:
        h.remove()
    return out, [seen[n] for n in names]


def test_trainer_loss_adds_gain_times_layer_terms_after_hard_distillation(tmp_path):
    student, tok = tiny_model(tmp_path, seed=0)
    teacher, _ = tiny_model(tmp_path, seed=1)
    _no_dropout(student)
    dataset = tiny_dataset(tok, 8)
    recipe = [  # the layer term listed first: SparseML's order still applies it last
        mod(
            "PerLayerDistillationModifier",
            gain=0.8,
            project_features=False,
            student_layer_names=LAYERS,
        ),  # fmt: skip
        mod("EpochRangeModifier", start_epoch=0.0, end_epoch=2.0),
        mod("DistillationModifier", hardness=1.0, temperature=2.0, distill_output_keys=["logits"]),
    ]
    trainer = make_trainer(tmp_path, student, dataset, recipe=recipe, teacher=teacher)
    batch = {k: torch.stack([dataset[i][k] for i in range(4)]) for k in dataset[0]}
    trainer._initialize_recipe()
    student.train()
    loss = trainer.compute_loss(student, dict(batch))
    feed = {k: v for k, v in batch.items() if k != "labels"}
    out, s_hidden = _hidden(student, batch, LAYERS)
    t_out, t_hidden = _hidden(teacher, feed, LAYERS)
    s, t = torch.log_softmax(out.logits / 2.0, -1), torch.softmax(t_out.logits / 2.0, -1)
    kd = (t * (t.log() - s)).sum() / 4 * 4.0
    layers = sum(
        ((a - b) ** 2).mean() / ((b**2).mean() + 1e-6)
        for a, b in zip(s_hidden, t_hidden, strict=True)
    )
    assert float(loss.detach()) == pytest.approx(float(kd + 0.8 * layers), rel=1e-5)
    assert loss.requires_grad


def test_training_moves_the_student_towards_the_teacher_layers(tmp_path):
    student, tok = tiny_model(tmp_path, seed=0)
    teacher, _ = tiny_model(tmp_path, seed=1)
    _no_dropout(student)
    dataset = tiny_dataset(tok, 16)
    batch = {k: torch.stack([dataset[i][k] for i in range(16)]) for k in dataset[0]}
    feed = {k: v for k, v in batch.items() if k != "labels"}

    def gap():
        _, s_hidden = _hidden(student, feed, LAYERS)
        _, t_hidden = _hidden(teacher, feed, LAYERS)
        return sum(
            float(layer_loss(a, b, True, 1e-6)) for a, b in zip(s_hidden, t_hidden, strict=True)
        )

    before = gap()
    recipe = [
        mod("EpochRangeModifier", start_epoch=0.0, end_epoch=6.0),
        mod("SetLearningRateModifier", start_epoch=0.0, learning_rate=3e-3),
        mod(
            "PerLayerDistillationModifier",
            gain=10.0,
            project_features=False,
            student_layer_names=LAYERS,
        ),  # fmt: skip
    ]
    make_trainer(tmp_path, student, dataset, recipe=recipe, teacher=teacher).train()
    assert gap() < 0.7 * before


def test_hooks_are_removed_at_end_epoch_and_the_loss_is_untouched_after(tmp_path):
    student, tok = tiny_model(tmp_path, seed=0)
    teacher, _ = tiny_model(tmp_path, seed=1)
    recipe = [
        mod("EpochRangeModifier", start_epoch=0.0, end_epoch=2.0),
        mod(
            "PerLayerDistillationModifier",
            end_epoch=1.0,
            project_features=False,
            student_layer_names=LAYERS,
        ),  # fmt: skip
    ]
    trainer = make_trainer(tmp_path, student, tiny_dataset(tok, 8), recipe=recipe, teacher=teacher)
    trainer.train()
    modules = dict(student.named_modules())
    assert all(not modules[n]._forward_hooks for n in LAYERS)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({}, "project_features", "only false is supported"),
        (
            {"project_features": False, "student_layer_names": ["a"], "teacher_layer_names": []},
            "teacher_layer_names",
            "0 names for 1",
        ),  # fmt: skip
        ({"project_features": False, "student_layer_names": []}, "student_layer_names", "empty"),
        ({"project_features": False, "gain": -1.0}, "gain", ">= 0"),
        ({"project_features": False, "epsilon": 0.0}, "epsilon", "> 0"),
    ],
)
def test_bad_fields_are_refused_by_name(fields, field, message):
    with pytest.raises(FieldError, match=message) as err:
        mod("PerLayerDistillationModifier", **fields)
    assert err.value.field == field


def test_recipe_file_names_the_modifier_and_field(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("modifiers:\n  - !PerLayerDistillationModifier\n      gain: 1.0\n")
    with pytest.raises(RecipeError, match=r"recipe\.yaml.*project_features"):
        load_recipe(str(path))


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["bert.encoder.layer.9.output"], r"\['bert.encoder.layer.9.output'\] are not modules"),
        (["bert.encoder"], r"layer 'bert.encoder' returned a \w+; name modules that return one"),
    ],
)
def test_unknown_or_tuple_layers_fail_with_the_name(tmp_path, names, message):
    student, tok = tiny_model(tmp_path, seed=0)
    teacher, _ = tiny_model(tmp_path, seed=1)
    recipe = [
        mod("EpochRangeModifier", start_epoch=0.0, end_epoch=1.0),
        mod("PerLayerDistillationModifier", project_features=False, student_layer_names=names),
    ]
    trainer = make_trainer(tmp_path, student, tiny_dataset(tok, 4), recipe=recipe, teacher=teacher)
    with pytest.raises(RecipeError, match=message):
        trainer.train()


def test_default_layers_pair_every_linear(tmp_path):
    student, tok = tiny_model(tmp_path, seed=0)
    teacher, _ = tiny_model(tmp_path, seed=1)
    recipe = [
        mod("EpochRangeModifier", start_epoch=0.0, end_epoch=1.0),
        mod("PerLayerDistillationModifier", project_features=False),
    ]
    trainer = make_trainer(tmp_path, student, tiny_dataset(tok, 4), recipe=recipe, teacher=teacher)
    trainer._initialize_recipe()
    (per_layer,) = trainer.manager.find("PerLayerDistillationModifier")
    linears = [n for n, m in student.named_modules() if type(m) is torch.nn.Linear]
    assert [s for s, _ in per_layer._pairs] == linears and len(linears) > 4


def test_without_teacher_is_an_error(tmp_path):
    model, tok = tiny_model(tmp_path)
    recipe = [mod("PerLayerDistillationModifier", project_features=False)]
    trainer = make_trainer(tmp_path, model, tiny_dataset(tok, 4), recipe=recipe)
    with pytest.raises(RecipeError, match="no teacher"):
        trainer.train()


def test_loss_order_follows_sparseml():
    late = mod("PerLayerDistillationModifier", project_features=False, end_epoch=3.0)
    hard = mod("DistillationModifier", hardness=1.0)
    early = mod("PerLayerDistillationModifier", project_features=False, end_epoch=1.0)
    same = mod("PerLayerDistillationModifier", project_features=False)
    manager = RecipeManager([same, late, hard, early])
    # end epoch first (never-ending last), then start, then class name
    assert manager.loss_order == [early, late, hard, same]


def test_train_without_teacher_drops_both_distillations_and_says_so(tmp_path, caplog):
    import logging

    from sparse_transfer.tasks.recipe_fit import load_task_recipe
    from sparse_transfer.tasks.registry import get_task

    path = tmp_path / "recipe.yaml"
    path.write_text(
        "modifiers:\n"
        "  - !DistillationModifier\n      hardness: 1.0\n"
        "  - !PerLayerDistillationModifier\n      project_features: 0\n"
        "  - !EpochRangeModifier\n      end_epoch: 1.0\n"
    )
    model, _ = tiny_model(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sparse_transfer.tasks.recipe_fit"):
        recipe = load_task_recipe(str(path), None, get_task("text-classification"), model, None)
    assert [m.recipe_name for m in recipe.modifiers] == ["EpochRangeModifier"]
    assert "DistillationModifier and PerLayerDistillationModifier but no teacher" in caplog.text
