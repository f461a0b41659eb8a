"""``sparse-transfer benchmark --model_path DIR/deployment [...]``: argument parsing only."""

from __future__ import annotations

import argparse
import json


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return values


def _engine_list(text: str) -> list[str]:
    from sparse_transfer.runtime.engines import ENGINES

    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in ENGINES]
    if not values or bad:
        raise argparse.ArgumentTypeError(
            f"--engine {text!r}: comma-separated names of {', '.join(ENGINES)}"
        )
    return list(dict.fromkeys(values))


def register(subparsers) -> None:
    from sparse_transfer.runtime.engines import ENGINE_HELP

    parser = subparsers.add_parser(
        "benchmark",
        help="measure latency (p50/p90/p99) and throughput of an ONNX deployment folder",
    )
    parser.add_argument(
        "--model_path", required=True, help="deployment folder (contains model.onnx)"
    )
    parser.add_argument("--batch_size", type=_int_list, default=[1, 32], help="e.g. 1,32")
    parser.add_argument("--sequence_length", type=int, default=128)
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: all cores)"
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=20,
        help="timed runs per batch size (with --compare: spread over the rounds, >= 1 each)",
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="DIR",
        default=None,
        help="more deployment folders to time against --model_path in interleaved rounds "
        "(every model takes its turn each round, so a shared machine's load falls on all alike)",
    )
    parser.add_argument("--rounds", type=int, default=30, help="with --compare: interleaved rounds")
    parser.add_argument(
        "--engine",
        type=_engine_list,
        default=["auto"],
        help=f"ONNX Runtime engine(s), comma-separated: {ENGINE_HELP}. Several (e.g. "
        "onnxruntime,onnxruntime-sparse) time every deployment under each, interleaved",
    )
    parser.add_argument(
        "--dynamic_int8_of",
        metavar="DENSE_DIR",
        default=None,
        help="also time ONNX Runtime's quantize_dynamic of this dense FP32 deployment "
        "(the yardstick a sparse int8 deployment must beat), interleaved with the rest",
    )
    parser.add_argument(
        "--texts",
        metavar="FILE.jsonl",
        default=None,
        help="time real sentences (each line's text or sentence field, padded to "
        "--sequence_length with their attention masks; the timed runs take up to 32 batches "
        "of them in turn) instead of random token ids, which hide data-dependent costs; "
        "DeepSparse is then not run",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=_handle)


def _handle_compare(args) -> int:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sparse-transfer-dynamic-") as tmp:
        deployments = {path: path for path in [args.model_path, *(args.compare or [])]}
        if args.dynamic_int8_of:
            from sparse_transfer.export.benchmark import dynamic_int8_copy

            yardstick = f"quantize_dynamic({args.dynamic_int8_of})"
            copy = dynamic_int8_copy(args.dynamic_int8_of, f"{tmp}/dynamic")
            deployments[yardstick] = (copy, "onnxruntime")  # it has only the standard graph
        return _run_compare(args, deployments)


def _run_compare(args, deployments) -> int:
    from sparse_transfer.export import compare

    iterations = max(1, args.iterations // args.rounds)  # spread over the rounds
    texts = _texts(args)
    results = {
        b: compare(
            deployments,
            b,
            args.sequence_length,
            args.threads,
            rounds=args.rounds,
            iterations=iterations,
            warmup=args.warmup,
            ort_engines=args.engine,
            texts=texts,
        )
        for b in args.batch_size
    }
    if args.json:
        print(json.dumps({f"batch_{b}": r for b, r in results.items()}, indent=2))
        return 0
    print(
        f"== sparse-transfer benchmark --compare (seq {args.sequence_length}, "
        f"{args.rounds} interleaved rounds of {iterations}; ratios vs {args.model_path}; "
        f"inputs: {f'{len(texts)} real texts' if texts else 'random token ids'}) =="
    )
    for b, result in results.items():
        for engine in ("onnxruntime", "deepsparse"):
            runs = result.get(engine) or {}
            if engine == "deepsparse" and not runs.get("available", False):
                print(f"  deepsparse: {runs.get('reason', 'not run')}")
                continue
            names = [n for n in runs if n not in ("available", "python")]
            base = runs[names[0]]["p50_ms"]
            for path in names:
                s = runs[path]
                print(
                    f"  {engine:<12} batch_{b:<4} p50 {s['p50_ms']:9.2f} ms  "
                    f"best round {s['best_round_p50_ms']:9.2f} ms  p90 {s['p90_ms']:9.2f} ms  "
                    f"{base / s['p50_ms']:6.2f}x  {path}"
                )
    return 0


def _texts(args) -> list[str] | None:
    from sparse_transfer.export.benchmark import load_texts

    return load_texts(args.texts) if args.texts else None


def _handle(args) -> int:
    from sparse_transfer.export import benchmark

    if args.compare or args.dynamic_int8_of or len(args.engine) > 1:
        return _handle_compare(args)
    result = benchmark(
        args.model_path,
        batch_sizes=args.batch_size,
        sequence_length=args.sequence_length,
        threads=args.threads,
        warmup=args.warmup,
        iterations=args.iterations,
        ort_engine=args.engine[0],
        texts=_texts(args),
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"== sparse-transfer benchmark: {result['model']} (seq {result['sequence_length']}, "
        f"threads {result['threads']}, ONNX Runtime engine {result.get('ort_engine')}, "
        f"inputs: {result['inputs']}) =="
    )
    for engine in ("onnxruntime", "deepsparse"):
        runs = result.get(engine) or {}
        if engine == "deepsparse" and not runs.get("available", False):
            print(f"  deepsparse: {runs.get('reason', 'not run')}")
            continue
        for key, s in runs.items():
            if not key.startswith("batch_"):
                continue
            print(
                f"  {engine:<12} {key:<9} p50 {s['p50_ms']:9.2f} ms  p90 {s['p90_ms']:9.2f} ms  "
                f"p99 {s['p99_ms']:9.2f} ms  {s['throughput_items_per_s']:10.1f} items/s"
            )
    return 0
