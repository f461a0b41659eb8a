"""SetWeightDecayModifier: decaying groups only (not bias/LayerNorm), from start_epoch."""

from __future__ import annotations

from transformers import TrainerCallback

from tests.unit._train_utils import make_trainer, mod, tiny_dataset, tiny_model


class _WDRecorder(TrainerCallback):
    def __init__(self):
        self.trainer = None
        self.wds: list[list[float]] = []

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.wds.append([g["weight_decay"] for g in self.trainer.optimizer.param_groups])


def _run(tmp_path, recipe, **kw):
    model, tok = tiny_model(tmp_path)
    trainer = make_trainer(tmp_path, model, tiny_dataset(tok, 16), recipe=recipe, **kw)
    rec = _WDRecorder()
    rec.trainer = trainer
    trainer.add_callback(rec)
    trainer.train()
    return trainer, rec.wds


def test_weight_decay_applies_to_decaying_groups_from_start_epoch(tmp_path):
    recipe = [
        mod("EpochRangeModifier", start_epoch=0.0, end_epoch=1.0),
        mod("SetWeightDecayModifier", start_epoch=0.5, weight_decay=0.01),
    ]
    trainer, wds = _run(tmp_path, recipe)  # CLI weight decay 0: both HF groups start at 0
    decay_group, no_decay_group = trainer.optimizer.param_groups
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    assert all(
        "bias" not in names[id(p)] and "LayerNorm" not in names[id(p)]
        for p in decay_group["params"]
    )
    assert any("LayerNorm" in names[id(p)] for p in no_decay_group["params"])
    # 4 steps per epoch: steps 0-1 before epoch 0.5, then the recipe's value on the decaying group only.
    assert wds == [[0.0, 0.0], [0.0, 0.0], [0.01, 0.0], [0.01, 0.0]]


def test_param_groups_override(tmp_path):
    recipe = [
        mod("EpochRangeModifier", start_epoch=0.0, end_epoch=0.5),
        mod("SetWeightDecayModifier", start_epoch=0.0, weight_decay=0.2, param_groups=[0, 1]),
    ]
    _, wds = _run(tmp_path, recipe, weight_decay=0.05)
    assert wds[0] == [0.2, 0.2]
