"""`sparse-transfer recipe check RECIPE [--recipe_args JSON] [--json]`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("recipe", help="Validate and inspect recipes.")
    sub = parser.add_subparsers(dest="recipe_command", required=True, metavar="SUBCOMMAND")
    check = sub.add_parser(
        "check",
        help="Validate a recipe and print its resolved modifiers and variables.",
        description="Loads a recipe (.yaml/.yml, Markdown with YAML front matter, zoo stub, "
        "s3:// URI or the name of a built-in recipe), evaluates every eval(...) with the "
        "recipe args applied, validates every modifier and prints the result. Exits 2 with "
        "the problems (file:line, modifier, field) on a bad recipe.",
    )
    check.add_argument("recipe", metavar="RECIPE", help="recipe path, stub, URI or built-in name")
    check.add_argument(
        "--recipe_args",
        default=None,
        help="JSON object overriding recipe variables, e.g. '{\"num_epochs\": 1}'",
    )
    check.add_argument("--json", action="store_true", help="print the resolved recipe as JSON")
    check.set_defaults(handler=check_command)


def check_command(args: argparse.Namespace) -> int:
    from sparse_transfer.recipe import inert_modifiers, load_recipe
    from sparse_transfer.tasks.recipe_fit import resolve_recipe

    recipe = load_recipe(resolve_recipe(args.recipe), args.recipe_args)
    for line in inert_modifiers(recipe):
        print(f"WARNING: {line}", file=sys.stderr)
    data = recipe.to_dict()
    if args.json:
        print(json.dumps(data, indent=2, allow_nan=False))  # the parser refuses NaN/inf
        return 0
    print(f"recipe: {recipe.source_path or args.recipe}  (version {data['version']})")
    print(f"variables ({len(data['variables'])}):")
    for name, value in data["variables"].items():
        print(f"  {name}: {_fmt(value)}")
    print(f"modifiers ({len(data['modifiers'])}):")
    for entry in data["modifiers"]:
        print(f"  - {entry['type']}")
        for name, value in entry.items():
            if name != "type":
                print(f"      {name}: {_fmt(value)}")
    print("OK")
    return 0


def _fmt(value: Any) -> str:
    """Numbers as numbers, everything else as JSON (so strings are quoted, lists readable)."""
    return json.dumps(value, allow_nan=False)
