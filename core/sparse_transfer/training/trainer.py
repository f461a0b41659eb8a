"""SparseTrainer: the Hugging Face Trainer driven by a SparseML-style recipe.

The bridge is thin on purpose. A `TrainerCallback` turns the Trainer's hooks
into modifier events, and a `compute_loss` override adds BATCH_START and
LOSS_CALCULATED (where distillation replaces the loss):

    on_train_begin          -> initialize (masks, LR, WD, QAT on resume)
    compute_loss (training) -> BATCH_START, forward, LOSS_CALCULATED
    before clipping / step  -> OPTIMIZER_PRE_STEP  (mask grads, set LR/WD)
    on_optimizer_step       -> OPTIMIZER_POST_STEP (re-apply masks, GMP updates)
    on_step_end             -> BATCH_END
    on_epoch_end            -> EPOCH_END
    on_train_end            -> finalize

The fractional epoch is ``global_step / steps_per_epoch`` with steps per epoch
taken from the Trainer's own computation (gradient accumulation included), so
schedules end where the recipe says. Under torchrun both are global: the
Trainer counts steps per epoch on the sharded loader and ``global_step`` counts
global batches (see `sparse_transfer.training.distributed` for the rest). The recipe decides the number of epochs,
the learning rate (the HF scheduler is replaced by a pass-through when the
recipe has LR modifiers) and weight decay; everything else comes from
`TrainingArguments`.
"""

from __future__ import annotations

import json
import logging
import weakref
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from sparse_transfer import storage
from sparse_transfer.modifiers.base import Event
from sparse_transfer.training import distributed
from sparse_transfer.training.finite import FiniteGuard, check_loss, check_weights
from sparse_transfer.training.manager import RecipeManager
from sparse_transfer.training.sparsity import sparsity_report
from sparse_transfer.training.state import TrainingState
from sparse_transfer.training.teacher import TeacherRunner

logger = logging.getLogger(__name__)

RECIPE_NAME = "recipe.yaml"
SPARSITY_NAME = "sparsity.json"


class RecipeLRScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Pass-through scheduler: the recipe's LR modifiers own the learning rate.

    `step()` leaves every group's LR as the modifiers set it, and
    `get_last_lr()` reports it, so the Trainer's logs show the recipe's LR.
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        super().__init__(optimizer, last_epoch=-1)

    def get_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]


class _RecipeCallback(TrainerCallback):
    def __init__(self, trainer: SparseTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._initialize_recipe()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.trainer._pre_step()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer._post_step()
        self.trainer._check_masks_agree()

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._fire(Event.BATCH_END, state.global_step)

    def on_epoch_end(self, args, state, control, **kwargs):
        self.trainer._fire(Event.EPOCH_END, state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer._finalize_recipe()
        self.trainer._check_replicas_agree()


class SparseTrainer(Trainer):
    """`transformers.Trainer` plus a recipe and an optional distillation teacher.

    Args:
        *args, **kwargs: exactly `transformers.Trainer`'s.
        recipe: a `Recipe` (or a list of modifiers, or a recipe path / YAML
            string passed through `sparse_transfer.recipe.load_recipe`).
        teacher: the distillation teacher (moved to the training device, eval
            mode, frozen). Required when the recipe distills.
        teacher_cache: cache teacher outputs per example (exact, since the
            teacher is frozen); set False to bound memory on huge datasets.
        class_weights: one weight per class id (single-label classification): the
            training loss becomes the class-weighted cross-entropy (``--class_weights``).
    """

    def __init__(
        self,
        *args: Any,
        recipe: Any = None,
        teacher: torch.nn.Module | None = None,
        teacher_cache: bool = True,
        class_weights: Any = None,
        **kwargs: Any,
    ):
        if isinstance(recipe, (str, Path)):
            from sparse_transfer.recipe import load_recipe

            recipe = load_recipe(recipe)
        super().__init__(*args, **kwargs)
        self.recipe = recipe
        self.manager = RecipeManager(recipe)
        # Our heads (BERT family) reduce their loss by the batch mean and ignore
        # `num_items_in_batch`; telling the Trainer otherwise would make it skip the
        # division by gradient accumulation steps. Mean-reduced losses it is.
        self.model_accepts_loss_kwargs = False
        self.teacher = teacher
        self.class_weights = (
            None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        )
        if teacher is not None:
            teacher.to(self.args.device)
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        self.sparse_state = TrainingState(model=self.model, teacher=teacher)
        if teacher is not None:
            self.sparse_state.extras["teacher_forward"] = TeacherRunner(
                teacher, cache=teacher_cache
            )
        self._pre_step_done_for: int | None = None
        self._checked_masks: tuple[weakref.ref, ...] = ()
        self._apply_recipe_epochs()
        self.add_callback(_RecipeCallback(self))
        self.add_callback(FiniteGuard())
        for line in self.manager.describe():
            logger.info("recipe: %s", line)

    # --- recipe decisions -------------------------------------------------------
    def _apply_recipe_epochs(self) -> None:
        epochs = self.manager.total_epochs
        if epochs is None:
            return
        if float(self.args.num_train_epochs) != epochs:
            logger.warning(
                "recipe sets num_train_epochs=%s (overrides --num_train_epochs %s)",
                epochs,
                self.args.num_train_epochs,
            )
        self.args.num_train_epochs = epochs
        if self.args.max_steps > 0:
            logger.warning(
                "--max_steps %d stops training before the recipe's %s epochs; schedules still "
                "follow the recipe's epochs",
                self.args.max_steps,
                epochs,
            )
        self.sparse_state.total_epochs = epochs

    def set_initial_training_values(self, args, dataloader):
        values = super().set_initial_training_values(args, dataloader)
        # (num_train_epochs, num_update_steps_per_epoch, ...): the Trainer's own count,
        # gradient accumulation and the last partial accumulation included.
        self.sparse_state.steps_per_epoch = int(values[1])
        return values

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and self.manager.controls_lr:
            optimizer = optimizer if optimizer is not None else self.optimizer
            self.lr_scheduler = RecipeLRScheduler(optimizer)
            self._created_lr_scheduler = True
            logger.info(
                "recipe controls the learning rate; --learning_rate/--lr_scheduler_type/"
                "--warmup_* are not used"
            )
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    # --- lifecycle ----------------------------------------------------------------
    def _initialize_recipe(self) -> None:
        st = self.sparse_state
        st.model = self.model
        st.optimizer = self.optimizer
        st.global_step = self.state.global_step
        decay = set(self.get_decay_parameter_names(self.model))
        st.decay_param_ids = {id(p) for n, p in self.model.named_parameters() if n in decay}
        st.grad_sampler = self._grad_sampler
        st.log = lambda metrics: logger.info("recipe: %s", metrics)
        self.manager.initialize(st)
        self._check_optimizer_params()
        self._check_masks_agree()

    def _finalize_recipe(self) -> None:
        self.sparse_state.global_step = self.state.global_step
        steps, epoch = self.state.global_step, float(self.state.epoch or 0.0)
        last_step_epoch = epoch * (steps - 1) / steps if steps else 0.0  # where the last step began
        never = [
            m
            for m in self.manager.modifiers
            if m.start_epoch >= 0 and (not m.started or m.start_epoch > last_step_epoch + 1e-9)
        ]
        for m in never:  # e.g. QAT from epoch 0.5 of a one-step epoch: the export will refuse it
            logger.warning(
                "recipe: %s never ran (start_epoch %s; training stopped after %d steps at epoch "
                "%.2f): give it a start_epoch inside the training window",
                m.recipe_name,
                m.start_epoch,
                steps,
                epoch,
            )
        self.manager.finalize(self.sparse_state)
        runner = self.sparse_state.extras.get("teacher_forward")
        if runner is not None:
            logger.info(
                "teacher outputs: %d cached rows used, %d computed", runner.hits, runner.misses
            )

    def _fire(self, event: Event, global_step: int) -> None:
        self.sparse_state.global_step = global_step
        self.manager.event(event, self.sparse_state)

    def _pre_step(self) -> None:
        """OPTIMIZER_PRE_STEP once per step (before clipping when clipping is on)."""
        step = self.state.global_step
        if self._pre_step_done_for == step:
            return
        self._pre_step_done_for = step
        self._fire(Event.OPTIMIZER_PRE_STEP, step)

    def _post_step(self) -> None:
        # The Trainer increments global_step after this hook; modifiers see the step as done.
        self._fire(Event.OPTIMIZER_POST_STEP, self.state.global_step + 1)

    def _clip_grad_norm(self, model):
        # Mask gradients before the norm is computed, so pruned weights do not count.
        self._pre_step()
        return super()._clip_grad_norm(model)

    def _recipe_masks(self) -> list[torch.Tensor]:
        masks = []
        for m in self.manager.modifiers:
            masks.extend(getattr(getattr(m, "masks", None), "masks", None) or [])
        return masks

    def _check_masks_agree(self) -> None:
        """Under torchrun: every rank holds the same masks (checked when any mask changes).

        Mask tensors are replaced, never edited, when a modifier recomputes them,
        so a change of identities is the cheap signal to compare digests.
        """
        if not distributed.is_distributed():
            return
        masks = self._recipe_masks()
        seen = self._checked_masks
        if len(seen) == len(masks) and all(ref() is m for ref, m in zip(seen, masks, strict=True)):
            return
        self._checked_masks = tuple(weakref.ref(m) for m in masks)  # no id reuse, no copies kept
        distributed.assert_same_on_all_ranks(
            [m.ne(0) for m in masks], f"recipe masks at step {self.state.global_step}"
        )

    def _check_replicas_agree(self) -> None:
        """Under torchrun: the trained weights and masks are bitwise equal on every rank."""
        if not distributed.is_distributed():
            return
        weights = distributed.assert_same_on_all_ranks(
            [p for _, p in sorted(self.model.named_parameters())], "trained weights"
        )
        masks = distributed.assert_same_on_all_ranks(
            [m.ne(0) for m in self._recipe_masks()], "final recipe masks"
        )
        logger.info(
            "rank %d of %d: weights sha256 %s, masks sha256 %s (identical on every rank)",
            distributed.rank(),
            distributed.world_size(),
            weights,
            masks,
        )

    def _check_optimizer_params(self) -> None:
        """Masked / scheduled params must be the optimizer's own Parameter objects."""
        if self.optimizer is None:
            return
        in_opt = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        for m in self.manager.modifiers:
            masks = getattr(m, "masks", None)
            for name, p in zip(
                getattr(masks, "names", []), getattr(masks, "params", []), strict=False
            ):
                if p.requires_grad and id(p) not in in_opt:
                    raise RuntimeError(
                        f"{m.recipe_name}: parameter {name} is not updated by the optimizer "
                        "(was the module replaced after the optimizer was built?)"
                    )

    # --- loss -------------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        check_loss(loss, self.state.global_step + 1)
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training or not self.manager:
            loss, outputs = self._task_loss(model, inputs, num_items_in_batch)
            return (loss, outputs) if return_outputs else loss
        st = self.sparse_state
        st.global_step = self.state.global_step
        st.inputs = inputs
        self.manager.event(Event.BATCH_START, st)
        loss, outputs = self._task_loss(model, inputs, num_items_in_batch)
        st.loss, st.outputs = loss, outputs
        self.manager.event(Event.LOSS_CALCULATED, st)  # distillation mixes in the teacher here
        loss = st.loss
        st.inputs = st.outputs = st.loss = None
        return (loss, outputs) if return_outputs else loss

    def _task_loss(self, model, inputs, num_items_in_batch):
        """The model's own loss, or with `class_weights` the class-weighted cross-entropy
        (`torch.nn.functional.cross_entropy(weight=...)`: sum of w[y_i] * nll_i over sum of
        w[y_i]) of its logits; distillation then uses that as its task loss."""
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if self.class_weights is not None and model.training and "labels" in inputs:
            logits = outputs["logits"]
            weight = self.class_weights.to(device=logits.device, dtype=torch.float32)
            loss = torch.nn.functional.cross_entropy(
                logits.float().view(-1, logits.shape[-1]), inputs["labels"].view(-1), weight=weight
            )
        return loss, outputs

    def _grad_sampler(self, count: int, batch_size: int | None = None):
        """Yields `count` times with ``.grad`` = one fresh training mini-batch gradient.

        `batch_size` (oBS's ``grad_sampler_kwargs``) replaces the training batch size
        for these samples, as SparseML's trainer rebuilds its loader with those kwargs.
        Under torchrun the loader is sharded and this backward bypasses DDP, so the
        gradients are averaged across ranks here: each sample is the gradient of
        the *global* batch, on every rank, as in a single process with that batch
        (oBS then builds identical Fisher inverses, and so identical masks, everywhere).
        """
        model = self.model
        saved = self._train_batch_size
        if batch_size is not None:
            self._train_batch_size = batch_size
        try:
            loader = self.get_train_dataloader()
        finally:
            self._train_batch_size = saved
        iterator = iter(loader)
        was_training = model.training
        model.train()
        try:
            for _ in range(count):
                try:
                    batch = next(iterator)
                except StopIteration:
                    iterator = iter(loader)
                    batch = next(iterator)
                batch = self._prepare_inputs(batch)
                model.zero_grad(set_to_none=True)
                with self.compute_loss_context_manager():
                    loss = Trainer.compute_loss(self, model, batch)
                loss.backward()
                # Outside DDP: average over ranks so the Fisher sees the global batch's gradient.
                distributed.average_gradients_(list(model.parameters()))
                yield
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)

    # --- checkpoints and outputs -------------------------------------------------------
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # Weights keep their plain HF names under QAT, so they load first; then a QAT
        # checkpoint re-creates the fake-quant modules with their saved scales.
        from sparse_transfer.quantization import is_qat_prepared, restore_qat

        super()._load_from_checkpoint(resume_from_checkpoint, model)
        target = model if model is not None else self.model
        if not is_qat_prepared(target) and restore_qat(target, resume_from_checkpoint):
            logger.info("restored QAT state from %s", resume_from_checkpoint)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        check_weights(self.model, f"saving the model at step {self.state.global_step}")
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            self.save_recipe_artifacts(output_dir or self.args.output_dir)

    def save_recipe_artifacts(self, output_dir: str | Path) -> None:
        """Writes recipe.yaml, sparsity.json and the QAT state next to the model."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        if self.recipe is not None and hasattr(self.recipe, "to_yaml"):
            storage.write_bytes_atomic(out / RECIPE_NAME, self.recipe.to_yaml().encode())
        report = json.dumps(sparsity_report(self.model), indent=2) + "\n"
        storage.write_bytes_atomic(out / SPARSITY_NAME, report.encode())
        from sparse_transfer.quantization import is_qat_prepared, save_qat_config

        if is_qat_prepared(self.model):
            save_qat_config(self.model, out)
