"""`TaskSpec`: the whole of one task, as data every other module asks (a row of the registry).

Metrics, served inputs/outputs, export inputs, the zoo's architecture suffix
and the length defaults live here, so export, serving, the pipeline and the
zoo never branch on a task's name: they are handed the spec and read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TaskSpec:
    """How one task plugs into the shared train/evaluate loop and everything after it.

    Attributes:
        name: the CLI name, e.g. ``text-classification`` (spelled in `tasks.registry`).
        auto_class: name of the ``transformers`` auto class for the head.
        args_class: dataclass of task-only flags (parsed with the shared ones).
        distill_output_keys: model outputs a teacher distils for this task.
        default_max_seq_length: used when ``--max_seq_length`` is not given (0 in a pipeline).
        prepare: ``prepare(raw, sources, data_args, task_args, sample=False)`` -> a
            `PreparedTask` (``sample``: `raw` holds only each file's first rows).
        output_names: the model's (and the ONNX graph's) outputs, in order.
        primary_metrics: the headline metric, first one present in the results wins.
        metric_names: every fixed metric name the task can report (gate_metric choices).
        metric_prefixes / metric_suffixes: metric families named after a label or entity
            (``f1_<label>``, ``<ENTITY>_f1``), also accepted as gate metrics.
        default_doc_stride: the task's ``doc_stride`` default (None: no such flag).
        export_inputs: what export feeds the graph and ``--verify_dataset`` rows hold:
            ``text`` (one text or a pair), ``pair`` (question + context) or ``words``.
        row_label: a ``label`` column in ``--verify_dataset`` rows scores each row.
        glue_task_names: ``--task_name`` picks GLUE columns and label names.
        describe_data: ``describe_data(data_args)`` -> (what the flags fix of a data file, in
            words; how to free it), for one-line configure errors; None or ``("", "")``: the
            data decides.
        architecture_suffix: the head's class-name suffix in ``config.json`` (the zoo reads
            a model's task from it).
        served_as: the serving codec kind (``sequence``, ``tokens``, ``span``); "" = not served.
        served_outputs: the v2 typed outputs ``(prediction key, datatype)`` of a served model.
    """

    name: str
    auto_class: str
    args_class: type | None
    distill_output_keys: tuple[str, ...]
    default_max_seq_length: int
    prepare: Callable[..., Any]
    output_names: tuple[str, ...] = ("logits",)
    primary_metrics: tuple[str, ...] = ("accuracy",)
    metric_names: tuple[str, ...] = ()
    metric_prefixes: tuple[str, ...] = ()
    metric_suffixes: tuple[str, ...] = ()
    default_doc_stride: int | None = None
    export_inputs: str = "text"
    row_label: bool = False
    glue_task_names: bool = False
    describe_data: Callable[[Any], tuple[str, str]] | None = None
    architecture_suffix: str = ""
    served_as: str = ""
    served_outputs: tuple[tuple[str, str], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def reports_metric(self, name: str) -> bool:
        """True when `name` is a metric this task can report (a label/entity part allowed)."""
        bare = name.removeprefix("eval_")
        if bare in self.metric_names:
            return True
        return any(bare.startswith(p) and len(bare) > len(p) for p in self.metric_prefixes) or any(
            bare.endswith(s) and len(bare) > len(s) for s in self.metric_suffixes
        )

    def describe_metrics(self) -> str:
        """The gate_metric choices in words, for one-line errors."""
        families = [f"{p}<label>" for p in self.metric_prefixes]
        families += [f"<entity>{s}" for s in self.metric_suffixes]
        return ", ".join([*self.metric_names, *families])
