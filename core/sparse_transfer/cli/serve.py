"""``sparse-transfer serve DEPLOYMENT [...]``: argument parsing only (see `sparse_transfer.serving`)."""

from __future__ import annotations

import os


def register(subparsers) -> None:
    from sparse_transfer.runtime.engines import ENGINE_HELP
    from sparse_transfer.serving.options import ENGINES, ServeOptions

    d = ServeOptions()
    parser = subparsers.add_parser(
        "serve",
        help="serve a deployment folder, s3:// URI or zoo stub over KServe's v1/v2 REST protocol",
        description="Verifies the deployment (manifest hashes, export parity, int8 variant on "
        "this CPU), then serves /v2/health/*, /v2/models/NAME[/infer], "
        "/v1/models/NAME:predict and /metrics.",
    )
    parser.add_argument("deployment", help="deployment folder (export-onnx output), s3:// or stub")
    parser.add_argument("--model_name", default=None, help="name in the URLs (default: the task)")
    parser.add_argument("--host", default=d.host, help="bind address (0.0.0.0 in a container)")
    parser.add_argument("--http_port", type=int, default=d.http_port)
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=d.engine,
        help=f"{ENGINE_HELP}; deepsparse: DeepSparse (non-production licence)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="threads per engine call (default: the "
        "usable cores, a pod's CPU limit included, shared out between the engine workers)"
    )  # fmt: skip
    parser.add_argument(
        "--engine_workers", type=int, default=d.engine_workers, help="batches run at once "
        "(default 1); on a CPU-bound server one per core keeps every core busy"
    )  # fmt: skip
    parser.add_argument(
        "--max_batch_size", type=int, default=d.max_batch_size, help="1 turns batching off"
    )
    parser.add_argument("--max_latency_ms", type=float, default=d.max_latency_ms)
    parser.add_argument("--max_queue", type=int, default=d.max_queue, help="waiting instances")
    parser.add_argument("--max_instances", type=int, default=d.max_instances, help="per request")
    parser.add_argument("--max_text_chars", type=int, default=d.max_text_chars)
    parser.add_argument("--max_seq_length", type=int, default=None)
    parser.add_argument("--multi_label_threshold", type=float, default=d.multi_label_threshold)
    parser.add_argument("--doc_stride", type=int, default=d.doc_stride)
    parser.add_argument("--n_best_size", type=int, default=d.n_best_size)
    parser.add_argument("--max_answer_length", type=int, default=d.max_answer_length)
    parser.add_argument("--version_2_with_negative", action="store_true")
    parser.add_argument(
        "--null_score_diff_threshold", type=float, default=d.null_score_diff_threshold
    )
    parser.add_argument(
        "--max_request_bytes",
        type=int,
        default=d.max_request_bytes,
        help="largest request body accepted (bytes); larger ones get 413 before parsing",
    )
    parser.add_argument(
        "--enable_model_repository",
        action="store_true",
        help="expose kserve's /v2/repository/models/NAME/load|unload (unauthenticated: "
        "anyone reaching the port could unload the model); off by default",
    )
    parser.set_defaults(handler=_handle)


def _handle(args) -> int:
    # The server logs one line per request; tqdm bars from the shared ONNX loop would
    # add one per batch. tqdm reads this when it is first imported, i.e. below.
    os.environ.setdefault("TQDM_DISABLE", "1")
    from sparse_transfer.serving import ServeOptions, resolve_deployment, serve

    fields = {k: v for k, v in vars(args).items() if k in ServeOptions.__dataclass_fields__}
    options = ServeOptions(**fields)
    engine = (
        options.engine if options.engine in ("deepsparse", "onnxruntime-sparse") else "onnxruntime"
    )
    folder, report = resolve_deployment(args.deployment, engine)
    serve(folder, report, options)
    return 0
