"""Step: the reference's training flags (pipeline parameters) -> one validated dict."""

from kfp import dsl

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def configure_training(
    task: str,
    max_seq_length: int = 0,
    doc_stride: int = 0,
    preprocessing_num_workers: int = 6,
    per_device_train_batch_size: int = 32,
    per_device_eval_batch_size: int = 32,
    gradient_accumulation_steps: int = 1,
    fp16: bool = True,
    seed: int = 42,
    evaluation_strategy: str = "epoch",
    eval_steps: int = 0,
    logging_steps: int = 500,
    logging_first_step: bool = False,
    save_strategy: str = "epoch",
    save_steps: int = 500,
    save_total_limit: int = 1,
    max_steps: int = -1,
    max_train_samples: int = 0,
    max_eval_samples: int = 0,
    gate_metric: str = "",
    recipe: str = "",
    recipe_args: str = "",
    zoo_root: str = "",
    allow_inert_modifiers: bool = False,
    task_name: str = "",
    dataset_name: str = "",
    train_file: str = "",
    validation_file: str = "",
    input_column_names: str = "",
    label_column_name: str = "",
    dataset_snapshot_prefix: str = "",
    trainer_flags: dict = {},  # noqa: B006 (KFP reads the literal default; never mutated)
    advanced: dict = {},  # noqa: B006 (KFP reads the literal default; never mutated)
    pipeline: str = "",
) -> dict:
    """Validates the flags, the gate metric, the recipe's windows and the data files' first
    rows before anything heavy runs; zero/-1 limits mean "unset" (the task's own default).
    `trainer_flags` (the run form's JSON object of rarely changed flags) wins over the flat
    flags; `advanced` (its object of step settings) is checked against `pipeline`'s keys."""
    options = dict(locals())  # exactly the parameters: taken before any other name exists
    from sparse_transfer.pipeline.data_check import DATA_CHECK_FLAGS
    from sparse_transfer.pipeline.options import configure_run

    options["zoo"] = options.pop("zoo_root")
    options["data"] = {name: options.pop(name) for name in DATA_CHECK_FLAGS}
    return configure_run(options.pop("task"), **options)
