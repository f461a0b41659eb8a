"""`sparse-transfer kernels [--json]`: what the native sparse int8 kernels do on this machine."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "kernels",
        help="Report the native sparse int8 kernels: library, CPU path, ONNX Runtime.",
        description="Prints the custom-op library's path, the instruction set it dispatches "
        "to on this CPU and ONNX Runtime's version, or why the kernels are unavailable (then "
        "the standard ONNX graph is used). Always exits 0: it is a report.",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=kernels_command)


def kernels_command(args: argparse.Namespace) -> int:
    from sparse_transfer.kernels import kernel_status

    status = kernel_status()
    if args.json:
        print(json.dumps(status.as_dict()))
        return 0
    print(f"available:   {'yes' if status.available else 'no'}")
    print(f"library:     {status.library or '-'}")
    print(f"isa:         {status.isa or '-'}")
    print(f"onnxruntime: {status.onnxruntime}")
    if status.reason:
        print(f"reason:      {status.reason}")
    return 0
