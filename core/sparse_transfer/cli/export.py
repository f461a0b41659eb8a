"""``sparse-transfer export-onnx --model_path DIR --task TASK [...]``: argument parsing only."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-onnx",
        help="export a trained model dir to a verified ONNX deployment folder (int8 after QAT)",
        description=(
            "Writes DIR/deployment/ (or --output): model.onnx, config.json, tokenizer files, "
            "recipe.yaml and export_report.json, after checking ONNX Runtime against PyTorch."
        ),
    )
    parser.add_argument("--model_path", required=True, help="directory written by save_pretrained")
    parser.add_argument(
        "--task",
        required=True,
        help="text-classification, token-classification, question-answering, masked-language-modeling",
    )
    parser.add_argument(
        "--max_seq_length",
        "--sequence_length",
        dest="sequence_length",
        type=int,
        default=None,
        help="length for parity inputs and fixed-shape runtimes (the graph's axes stay dynamic); "
        "default: the length the model was trained with (run_summary.json)",
    )
    parser.add_argument(
        "--output", default=None, help="deployment folder (default: MODEL_PATH/deployment)"
    )
    parser.add_argument(
        "--format",
        default="auto",
        choices=["auto", "fp32", "integer", "qdq"],
        help="auto: int8 integer ops for a QAT model, else fp32; qdq: QuantizeLinear/DequantizeLinear",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier deployment at the output folder (never a folder of other files)",
    )
    parser.add_argument("--compress", action="store_true", help="also write deployment.tar.gz")
    parser.add_argument(
        "--opset", type=int, default=None, help="ONNX opset (default 13; int8 needs >= 13)"
    )
    parser.add_argument(
        "--verify_dataset",
        default=None,
        help="JSONL examples for the parity check (labels enable the accuracy comparison)",
    )
    parser.set_defaults(handler=_handle)


def _handle(args) -> int:
    from sparse_transfer.export import export_onnx

    dest = export_onnx(
        args.model_path,
        args.task,
        output=args.output,
        sequence_length=args.sequence_length,
        format=args.format,
        compress=args.compress,
        opset=args.opset,
        verify_dataset=args.verify_dataset,
        overwrite=args.overwrite,
    )
    report = json.loads((dest / "export_report.json").read_text())
    sizes = report["sizes"]
    lines = [
        f"== sparse-transfer export-onnx {report['task']} ({report['format']}) ==",
        f"  deployment        {dest}",
        f"  opset             {report['opset']}",
        f"  parity            {report['parity']['summary']}",
        f"  sparsity          {report['sparsity']['overall']:.4f}",
        f"  model.onnx        {sizes['model_onnx_bytes'] / 1e6:.2f} MB "
        f"({sizes['deployment_vs_fp32']:.2f}x smaller than FP32 ONNX)",
    ]
    if report.get("int8"):
        lines.append(f"  zero pattern kept {report['int8']['zero_pattern_identical']}")
    if "compressed" in sizes:
        c = sizes["compressed"]
        lines.append(
            f"  {c['file']:<17} {c['bytes'] / 1e6:.2f} MB ({c['vs_fp32_onnx']:.2f}x smaller than FP32 ONNX)"
        )
    print("\n".join(lines), flush=True)
    return 0
