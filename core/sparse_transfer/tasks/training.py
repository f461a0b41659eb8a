"""`train`: one training loop for every task, typed arguments in, a `TrainResult` out.

Resolve model/recipe/teacher references, load and check data, tokenise, train
with `SparseTrainer` (recipe + teacher), evaluate, and publish the output dir
atomically: everything is written into a sibling ``.NAME.partial`` staging dir
that replaces the output folder only as `tasks.output_dir` allows
that is renamed to the output dir only at the very end, so a crashed run never
leaves an output dir that looks complete (and ``resume_from_checkpoint`` finds
the crashed run's checkpoints in the staging dir).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sparse_transfer import storage
from sparse_transfer.errors import DataError, SparseTransferError
from sparse_transfer.tasks import output_dir as output_rules
from sparse_transfer.tasks.args import DataArguments, ModelArguments, is_no_model
from sparse_transfer.tasks.data import check_heads
from sparse_transfer.tasks.outputs import write_json
from sparse_transfer.tasks.recipe_fit import resolve_recipe
from sparse_transfer.tasks.registry import get_task
from sparse_transfer.zoo import resolve

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced (also written as ``run_summary.json``).

    Attributes:
        task: the task name.
        output_dir: where the model (or the evaluation results) went.
        model / recipe / teacher: the references as given (teacher None when disabled).
        metrics: ``eval_*`` metrics of every evaluated split (MNLI mismatched: ``_mm``).
        train_metrics: the Trainer's ``train_*`` metrics and ``train_samples``.
        sparsity: `sparse_transfer.training.compare_sparsity` of the model before
            and after (``before``, ``after``, ``zeros_lost``, ``kept``, ...).
        truncated: split -> texts cut at ``max_seq_length``.
        max_seq_length: the length used.
    """

    task: str
    output_dir: str
    model: str
    recipe: str | None
    teacher: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    train_metrics: dict[str, Any] = field(default_factory=dict)
    sparsity: dict[str, Any] = field(default_factory=dict)
    truncated: dict[str, int] = field(default_factory=dict)
    max_seq_length: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _resolve(ref: str | None, kind: str, zoo: str | None) -> str | None:
    return None if ref is None else resolve(ref, kind, root=zoo)


def train(
    task: str,
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args,
    task_args: Any = None,
    *,
    zoo: str | None = None,
    overwrite_output_dir: bool = False,
) -> TrainResult:
    """Trains (and/or evaluates, predicts) `task` as ``training_args`` says.

    Phases: check the request and the data files' first rows, resolve references, load and
    check data, load models and recipe, tokenise, stage the output folder, train / evaluate /
    predict, write results.

    Args:
        task: a task name (aliases accepted, e.g. ``ner``).
        model_args / data_args: the shared argument dataclasses.
        training_args: `transformers.TrainingArguments` (``output_dir`` is required).
        task_args: the task's own dataclass (`TaskSpec.args_class`); None: its defaults.
        zoo: zoo root for stubs (default: `sparse_transfer.zoo.zoo_root()`).
        overwrite_output_dir: replace an existing output folder made by an earlier run
            (a folder of other files is refused even then; see `tasks.output_dir`).
    """
    from sparse_transfer.tasks.recipe_fit import load_task_recipe
    from sparse_transfer.training import compare_sparsity, sparsity_report

    spec = get_task(task)
    if task_args is None and spec.args_class is not None:
        task_args = spec.args_class()
    training_args = _check_request(training_args)
    output_dir = Path(training_args.output_dir).resolve()
    check_heads(spec, data_args, task_args)  # the files' first rows, before models are fetched
    refs = _References.resolve(model_args, data_args, task_args, zoo)
    rules = output_rules.replace_rules(overwrite_output_dir, refs.inputs)
    ours = True
    if training_args.do_train:  # refuse before training, not after it
        storage.check_replaceable(output_dir, **rules)
    else:  # evaluation/prediction only: the same rule, nothing written into others' folders
        ours = output_rules.check_results_folder(output_dir, refs.model)
    raw, prepared = _load_data(spec, data_args, task_args, training_args)
    model, tokenizer, teacher = _load_models(spec, prepared, model_args, refs)
    recipe = load_task_recipe(refs.recipe, model_args.recipe_args, spec, model, teacher)
    sparsity_before = sparsity_report(model)
    features = _tokenize(prepared, raw, tokenizer, training_args)
    staging, checkpoint = _stage(output_dir, training_args)
    trainer, eval_sets = _make_trainer(
        spec, prepared, features, model, tokenizer, teacher, recipe, training_args
    )
    all_metrics = _run(trainer, spec, prepared, features, eval_sets, training_args, checkpoint)
    sparsity = compare_sparsity(sparsity_before, sparsity_report(trainer.model))
    result = TrainResult(
        task=spec.name,
        output_dir=str(output_dir),
        model=model_args.model_name_or_path,
        recipe=model_args.recipe,
        teacher=refs.teacher_ref,
        metrics={k: v for k, v in all_metrics.items() if k.startswith("eval_")},
        train_metrics={k: v for k, v in all_metrics.items() if k.startswith("train")},
        sparsity=sparsity,
        truncated=dict(prepared.truncated),
        max_seq_length=prepared.max_seq_length,
    )
    _write_results(result, all_metrics, training_args, staging, output_dir, rules, ours)
    return result


@dataclass
class _References:
    """Model, recipe and teacher references resolved to local paths (teacher None: off)."""

    model: str
    recipe: str | None
    teacher_ref: str | None
    teacher: str | None
    inputs: list

    @classmethod
    def resolve(cls, model_args: ModelArguments, data_args: DataArguments, task_args, zoo):
        model_path = _resolve(model_args.model_name_or_path, "model", zoo)
        recipe_path = resolve_recipe(model_args.recipe, zoo)
        teacher_ref = (
            None if is_no_model(model_args.distill_teacher) else model_args.distill_teacher
        )
        teacher_path = _resolve(teacher_ref, "teacher", zoo)
        inputs = [model_path, recipe_path, teacher_path]
        inputs += output_rules.path_inputs(model_args, data_args, task_args)
        return cls(model_path, recipe_path, teacher_ref, teacher_path, inputs)


def _check_request(training_args):
    """The output folder is given and there is something to do; device fitted, seed set."""
    from transformers import set_seed

    from sparse_transfer.tasks.device import fit_to_device

    if not training_args.output_dir:
        raise DataError("--output_dir is required: where the trained model and results go")
    training_args = fit_to_device(training_args)
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise DataError("nothing to do: pass --do_train, --do_eval and/or --do_predict")
    set_seed(training_args.seed)
    return training_args


def _load_data(spec, data_args, task_args, training_args):
    """The raw splits (each one the request needs checked to exist) and the prepared task."""
    from sparse_transfer.tasks.data import load_raw_datasets
    from sparse_transfer.tasks.trainer_glue import eval_splits

    glue = data_args.task_name if spec.glue_task_names else None
    raw, sources = load_raw_datasets(data_args, seed=training_args.seed, glue_task=glue)
    if training_args.do_train and "train" not in raw:
        raise DataError(
            "--do_train needs training data: pass --train_file or a dataset with a train split"
        )
    if training_args.do_eval and not eval_splits(raw):
        raise DataError(
            "--do_eval needs a validation split: pass --validation_file, or --validation_ratio "
            "to split one off the training data"
        )
    if training_args.do_predict and "test" not in raw:
        raise DataError("--do_predict needs test data: pass --test_file")
    return raw, spec.prepare(raw, sources, data_args, task_args)


def _load_models(spec, prepared, model_args: ModelArguments, refs: _References):
    """Student (head fitted to the data), tokenizer and teacher (checked against the student)."""
    from sparse_transfer.tasks.lengths import model_positions
    from sparse_transfer.tasks.models import load_config, load_model, load_tokenizer

    config = load_config(refs.model)
    prepared.adopt_model_config(config, model_args.model_name_or_path)
    tokenizer = load_tokenizer(model_args.tokenizer_name or refs.model)
    prepared.fit_lengths(model_positions(config, tokenizer))
    model = load_model(refs.model, spec.name, **prepared.config_overrides())
    prepared.check_model(model, model_args.model_name_or_path)
    teacher = None
    if refs.teacher is not None:
        teacher = load_model(refs.teacher, spec.name)
        prepared.check_model(teacher, model_args.distill_teacher, role="teacher")
        if teacher.config.vocab_size != model.config.vocab_size:
            raise DataError(
                f"teacher {model_args.distill_teacher} has a vocabulary of "
                f"{teacher.config.vocab_size} tokens, the student {model.config.vocab_size}; "
                "distillation feeds both the same token ids"
            )
    return model, tokenizer, teacher


def _tokenize(prepared, raw, tokenizer, training_args) -> dict[str, Any]:
    from sparse_transfer.tasks.trainer_glue import eval_splits

    features = {}
    if training_args.do_train:
        features["train"] = prepared.preprocess("train", tokenizer, train=True)
    if training_args.do_eval or training_args.do_train:
        for split in eval_splits(raw):
            features[split] = prepared.preprocess(split, tokenizer, train=False)
    if training_args.do_predict and "test" in raw:
        features["test"] = prepared.preprocess("test", tokenizer, train=False)
    return features


def _stage(output_dir: Path, training_args) -> tuple[Path, Any]:
    """Training publishes a whole new output dir (staged); evaluation/prediction only adds
    result files (atomically) to it, so an existing model dir is never replaced."""
    staging, checkpoint = output_dir, training_args.resume_from_checkpoint
    if training_args.do_train:
        # Under torchrun rank 0 makes the staging folder first; the other ranks then use it.
        with training_args.main_process_first(local=False, desc="staging the output folder"):
            owner = training_args.process_index == 0
            staging, checkpoint = output_rules.prepare_staging(output_dir, checkpoint, owner=owner)
    staging.mkdir(parents=True, exist_ok=True)
    training_args.output_dir = str(staging)
    return staging, checkpoint


def _make_trainer(spec, prepared, features, model, tokenizer, teacher, recipe, training_args):
    from sparse_transfer.tasks.trainer_glue import eval_splits, logits_reducer, metrics_fn
    from sparse_transfer.training import SparseTrainer

    splits = eval_splits(prepared.raw)
    eval_sets = {s: prepared.model_features(features[s]) for s in splits if s in features}
    trainer = SparseTrainer(
        model=model,
        args=training_args,
        train_dataset=(prepared.model_features(features["train"]) if "train" in features else None),
        eval_dataset=(eval_sets.get("validation") if len(eval_sets) == 1 else (eval_sets or None)),
        processing_class=tokenizer,
        data_collator=prepared.collator(tokenizer, 8 if training_args.fp16 else None),
        compute_metrics=metrics_fn(spec, prepared),
        preprocess_logits_for_metrics=logits_reducer(spec, prepared),
        recipe=recipe,
        teacher=teacher,
        class_weights=prepared.class_weights() if training_args.do_train else None,
    )
    return trainer, eval_sets


def _run(trainer, spec, prepared, features, eval_sets, training_args, checkpoint) -> dict:
    """Train, evaluate every validation split, predict: the metrics of all of it."""
    from sparse_transfer.tasks.predict import write_test_predictions
    from sparse_transfer.tasks.trainer_glue import rename_split_metrics, split_metric_suffix

    all_metrics: dict[str, Any] = {}
    if training_args.do_train:
        with output_rules.os_errors_in(Path(training_args.output_dir)):  # a full disk: one line
            result = trainer.train(resume_from_checkpoint=checkpoint)
            trainer.save_model()
        train_metrics = dict(result.metrics)
        train_metrics["train_samples"] = len(features["train"])
        trainer.log_metrics("train", train_metrics)
        trainer.save_metrics("train", train_metrics)
        trainer.save_state()
        all_metrics.update(train_metrics)
    if training_args.do_eval:
        for split, dataset in eval_sets.items():
            prepared.active_split = split
            metrics = trainer.evaluate(eval_dataset=dataset, metric_key_prefix="eval")
            metrics["eval_samples"] = len(prepared.raw[split])
            metrics = rename_split_metrics(metrics, split)
            trainer.log_metrics(f"eval{split_metric_suffix(split)}", metrics)
            all_metrics.update(metrics)
    if training_args.do_predict and "test" in features:
        staging = Path(training_args.output_dir)
        write_test_predictions(trainer, spec, prepared, features["test"], staging)
    return all_metrics


def _write_results(result, all_metrics, training_args, staging, output_dir, rules, ours) -> None:
    """eval_results.json and run_summary.json, then the staged folder swapped in (rank 0)."""
    from sparse_transfer.training.distributed import is_main_process

    if not is_main_process():
        return  # under torchrun, rank 0 alone writes and publishes the output folder
    if training_args.do_eval:
        write_json(staging / "eval_results.json", {**all_metrics, "sparsity": result.sparsity})
    write_json(staging / "run_summary.json", result.to_dict())
    if training_args.do_train and not (staging / "config.json").exists():
        raise SparseTransferError(f"training finished but no model was saved into {staging}")
    if ours:  # the evaluated model's own folder gets results, not our record
        output_rules.record_results(staging)
    if staging != output_dir:
        storage.replace_directory(staging, output_dir, **rules)
