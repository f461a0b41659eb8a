"""The real-results report: tables carry the measured numbers, plots are small PNGs."""

from __future__ import annotations

import importlib.util

import pytest

from pipelines.results import report

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="pip install -e '.[results]'"
)


def _run(engine_ms: float) -> dict:
    return {
        "onnxruntime": {
            "batch_1": {"p50_ms": engine_ms, "p90_ms": engine_ms * 1.1},
            "batch_32": {"throughput_items_per_s": 1000 / engine_ms},
        },
        "deepsparse": {"available": False},
    }


RESULTS = {
    "accuracy": {
        "accuracy": {
            "dense teacher (FP32)": {"rotten_tomatoes": 80.0, "pang_lee": 85.0},
            "90% sparse FP32": {"rotten_tomatoes": 78.5, "pang_lee": 84.0},
            "90% sparse int8 (torch QAT)": {"rotten_tomatoes": 78.0, "pang_lee": 83.5},
            "90% sparse int8 ONNX": {"rotten_tomatoes": 78.0, "pang_lee": 83.25},
        }
    },
    "inference": {
        "threads": 2,
        "engines": {"dense FP32 ONNX": _run(100.0), "90% sparse int8 ONNX": _run(40.0)},
        "sizes": {
            "dense FP32 ONNX": {
                "model_onnx_bytes": 90e6,
                "folder_bytes": 91e6,
                "tar_gz_bytes": 84e6,
            },
            "90% sparse int8 ONNX": {
                "model_onnx_bytes": 23e6,
                "folder_bytes": 24e6,
                "tar_gz_bytes": 12e6,
            },
        },
    },
    "training": {
        "batch_size": 32,
        "sequence_length": 64,
        "threads": 2,
        "steps_per_variant": 5,
        "warmup_steps_excluded": 2,
        "variants": {
            "plain HF Trainer": {"s_per_step": 4.0, "overhead_pct": 0.0},
            "masks (constant pruning)": {"s_per_step": 4.08, "overhead_pct": 2.0},
        },
    },
    "sweep": {
        "budget": {"train_samples": 448, "recipe_args": {"num_epochs": 1.0}},
        "points": [
            {
                "target_sparsity": 0,
                "encoder_sparsity": 0.0,
                "accuracy": {"rotten_tomatoes": 79.0, "pang_lee": 84.0},
            },
            {
                "target_sparsity": 90,
                "encoder_sparsity": 0.9,
                "accuracy": {"rotten_tomatoes": 70.0, "pang_lee": 75.0},
            },
        ],
    },
}


def test_markdown_has_the_numbers_and_gaps():
    text = report.markdown(RESULTS)
    assert "| 90% sparse int8 ONNX | 78.00 (-2.00) | 83.25 (-1.75) |" in text
    assert "| dense teacher (FP32) | 80.00 | 85.00 |" in text
    assert "2.50x latency at batch 1" in text  # 100 ms / 40 ms
    assert "7.0x smaller" in text  # 84 MB / 12 MB
    assert "| masks (constant pruning) | 4.080 | +2.0% | <= +3% |" in text
    assert "| 90% | 90.0% | 70.00 | 75.00 |" in text
    assert "DeepSparse is not installed" in text


def test_report_files_are_written_and_small(tmp_path):
    report.write_report(RESULTS, tmp_path / "docs", tmp_path, cards=False)
    for name in ("accuracy.png", "sparsity_sweep.png"):
        png = (tmp_path / "docs" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 200_000
    assert (tmp_path / "docs" / "results.json").is_file()
    assert "### Accuracy" in (tmp_path / "docs" / "results.md").read_text()


def test_weight_range_and_sparseml_tables():
    results = {
        **RESULTS,
        "full_range": {
            "accuracy": {
                "torch QAT": {"rotten_tomatoes": 78.5, "pang_lee": 83.0},
                "int8 ONNX": {"rotten_tomatoes": None, "pang_lee": None},
            },
            "export": {"summary": "graph vs torch 0.25 > tolerance 0.22"},
        },
        "sparseml": {
            "accuracy": {"rotten_tomatoes": 77.0, "pang_lee": 84.5},
            "train_seconds": 900.0,
            "sparseml_version": "1.8.0",
        },
    }
    text = report.markdown(results)
    assert "| 7-bit weights (default): int8 ONNX | 78.00 | 83.25 |" in text
    assert "| full-range weights: torch QAT | 78.50 | 83.00 |" in text
    assert "| full-range weights: int8 ONNX | n/a | n/a |" in text  # export refused
    assert "Full-range export: graph vs torch 0.25 > tolerance 0.22" in text
    assert (
        "| SparseML 1.8.0 `text_classification` (its QAT model) | 77.00 (-3.00) | 84.50 (-0.50) |"
        in text
    )
    assert "| sparse-transfer (int8 ONNX) | 78.00 (-2.00) | 83.25 (-1.75) |" in text
    assert "SparseML" not in report.markdown(RESULTS)  # sections only when the stages ran


def test_full_range_recipe_sets_the_one_quantization_modifier():
    from pipelines.results.weight_range import full_range_recipe
    from sparse_transfer.recipe import builtin_recipe_path, load_recipe

    text = builtin_recipe_path("sst2_pruned90_quant").read_text()
    edited = full_range_recipe(text)
    assert edited.count("reduce_weight_range: false") == 1
    with pytest.raises(ValueError, match="exactly one"):
        full_range_recipe(edited)  # twice would be a recipe the stage did not expect
    recipe = load_recipe(edited)
    quant = recipe.find("QuantizationModifier")
    assert len(quant) == 1 and quant[0].reduce_weight_range is False


def test_sparseml_stage_names_what_is_missing(monkeypatch, tmp_path):
    from pipelines.results.sparseml_side import ENV_PYTHON, sparseml_python

    monkeypatch.delenv(ENV_PYTHON, raising=False)
    assert sparseml_python() == (None, f"{ENV_PYTHON} is unset (make sparseml-venv builds one)")
    monkeypatch.setenv(ENV_PYTHON, str(tmp_path / "nope"))
    python, why = sparseml_python()
    assert python is None and "is not an executable file" in why


def test_paired_standard_error_is_the_per_row_difference_spread():
    import numpy as np

    from pipelines.results.paired import paired_standard_error

    # 1,000 rows, 6 only b gets right, 5 only a: the per-row difference is +1 x6, -1 x5, 0 x989
    diff = np.array([1] * 6 + [-1] * 5 + [0] * 989, dtype=float)
    expected = 100 * diff.std(ddof=0) * np.sqrt(len(diff)) / len(diff)
    assert paired_standard_error(5, 6, 1000) == pytest.approx(expected)
    assert paired_standard_error(5, 6, 1000) == pytest.approx(0.3316, abs=1e-4)
    assert paired_standard_error(0, 0, 1000) == 0.0  # identical predictions: no noise at all
