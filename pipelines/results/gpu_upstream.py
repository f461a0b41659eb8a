"""A longer upstream pruning on a GPU: the real-results GMP recipe, more epochs.

Issue 16's "longest upstream pruning a GPU can fit": the same recipe, data and
hidden-state distillation as the ``zoo`` stage (`sparse_transfer.embedded.upstream.gmp_prune`),
with the schedule stretched by `--epochs` (pruning ends at 70% of the run, 28 mask
updates, as on the CPU). Run where a GPU is::

    python -m pipelines.results.gpu_upstream --dense DENSE_DIR --sentences upstream.jsonl \\
        --epochs 20 --out OUT_DIR

``--dense`` may hold fp16 weights (a copy small enough to carry to a GPU machine): they
are widened to fp32 before training. ``OUT_DIR/model`` is the pruned encoder,
``OUT_DIR/facts.json`` the cosine-to-dense figures; ``--fp16-copy`` also writes the
weights as fp16 in 15 MB parts (``part-*``) for the trip back.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import torch
    from safetensors.torch import load_file, save_file

    from sparse_transfer.embedded import upstream

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dense", required=True, type=Path)
    parser.add_argument("--sentences", required=True, type=Path, help="JSONL with a text field")
    parser.add_argument("--epochs", type=float, default=20.0)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--fp16-copy", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        dense = Path(tmp) / "dense"
        shutil.copytree(args.dense, dense)
        weights = load_file(str(args.dense / "model.safetensors"))
        save_file(
            {k: v.float() for k, v in weights.items()},
            str(dense / "model.safetensors"),
            metadata={"format": "pt"},
        )
        texts = [json.loads(line)["text"] for line in args.sentences.read_text().splitlines()]
        recipe_args = {
            "num_epochs": args.epochs,
            "pruning_end_epoch": 0.7 * args.epochs,
            "update_frequency": 0.025 * args.epochs,
            "init_lr": 5e-4,
        }
        start = time.time()
        facts = upstream.gmp_prune(
            dense, args.out / "model", texts[:6400], recipe_args=recipe_args, batch_size=32,
            max_length=64, eval_sentences=texts[-256:], use_cpu=not torch.cuda.is_available(),
        )  # fmt: skip
    facts.update(
        wall_seconds=round(time.time() - start, 1),
        recipe_args=recipe_args,
        device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    )
    (args.out / "facts.json").write_text(json.dumps(facts, indent=1, default=str))
    print(json.dumps(facts, default=str))
    if args.fp16_copy:
        half = args.out / "model16.safetensors"
        pruned = load_file(str(args.out / "model" / "model.safetensors"))
        save_file({k: v.half() for k, v in pruned.items()}, str(half), metadata={"format": "pt"})
        subprocess.run(["split", "-b", "15M", str(half), str(args.out / "part-")], check=True)
        half.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
