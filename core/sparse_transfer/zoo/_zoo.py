"""Zoo entries on a storage root: resolve, push, pull, list, show, search.

An entry is one published directory (one manifest) at ``ROOT/<stub path>/``:

    training/     Hugging Face model, tokenizer, config (+ recipe.yaml, sparsity.json, ...)
    recipe/       one or more recipes; `recipe:` in the card names the transfer recipe
    deployment/   ONNX export, when there is one
    model.md      model card (YAML front matter + body)

Entries are published with `storage.upload_dir`, so an entry is complete or
absent, and every read is verified against its manifest. On S3 each push is a
new version folder under the entry (``versions/<id>/``) that the manifest is
switched to by a conditional write, so concurrent pushes of one stub are
linearizable (one wins; a plain push that lost fails, a ``--force`` push
lands on top) and readers keep seeing the previous version until the switch.
Reading (resolve, pull, show) never writes into an entry.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sparse_transfer import storage
from sparse_transfer.errors import StorageError, ZooError
from sparse_transfer.zoo._card import CARD_NAME, ModelCard, check_meta, default_body, parse_card
from sparse_transfer.zoo._stub import Stub, is_stub, parse_stub, stub_query

log = logging.getLogger(__name__)

ZOO_ENV = "SPARSE_TRANSFER_ZOO"
KINDS = ("model", "recipe", "teacher", "deployment")
DEFAULT_RECIPE = "recipe/recipe.yaml"
RECIPE_SUFFIXES = (".yaml", ".yml", ".md")
# Trainer checkpoint state that a zoo entry must not carry (pickles, optimizer state).
_SKIP_TRAINING_FILES = {"training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", CARD_NAME,
                        storage.RECORD}  # fmt: skip
#: What each part of an entry must hold to be usable (checked before anything is uploaded).
WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin")


def zoo_root(root: str | Path | None = None) -> str:
    """The zoo root: `root`, else `$SPARSE_TRANSFER_ZOO`, else `<cache>/zoo` (local)."""
    if root:
        return str(root)
    env = os.environ.get(ZOO_ENV)
    if env:
        return env
    return str(storage.cache_root() / "zoo")


def entry_uri(stub: str | Stub, root: str | Path | None = None) -> str:
    """Where the entry for `stub` lives under the zoo root."""
    base = zoo_root(root).rstrip("/")
    if base.startswith("file://"):
        base = str(storage.parse_uri(base).path)
    return f"{base}/{parse_stub(stub).path}"


def _manifest(stub: str | Stub, root: str | Path | None) -> tuple[str, storage.Manifest]:
    uri = entry_uri(stub, root)
    try:
        return uri, storage.read_manifest(uri)
    except StorageError as exc:
        if "no manifest.json" in str(exc) and not storage.list_prefix(uri):
            raise ZooError(
                f"no zoo entry {parse_stub(stub)} in the zoo at {zoo_root(root)}: see `sparse-transfer zoo "
                "list`, set SPARSE_TRANSFER_ZOO / --zoo, or build the embedded zoo with `sparse-transfer zoo seed`"
            ) from None
        raise


# -- resolve ------------------------------------------------------------------------
def resolve(ref: str | Path, kind: str = "model", *, root: str | Path | None = None) -> str:
    """Turns a model/recipe/teacher/deployment reference into a local path.

    Args:
        ref: a zoo stub, an s3:// or file:// URI, a local path, or anything else
            (a Hugging Face hub id or a YAML string), which is returned unchanged.
        kind: ``model`` / ``teacher`` (the entry's training/), ``recipe`` (the
            entry's transfer recipe file) or ``deployment`` (its deployment/).
        root: zoo root for stubs (default `zoo_root()`).

    Returns:
        A local path (verified against the publish manifest for zoo entries and
        s3://), or `ref` unchanged.

    Raises:
        ZooError: malformed stub, missing entry, or an entry without the requested part.
        StorageError: missing, partial or corrupted artifacts.
    """
    if kind not in KINDS:
        raise ZooError(f"unknown reference kind '{kind}': use one of {', '.join(KINDS)}")
    if isinstance(ref, Path):
        ref = str(ref)
    if is_stub(ref):
        uri, manifest = _manifest(ref, root)
        return str(_resolve_entry(uri, manifest, kind, str(parse_stub(ref)), stub_query(ref)))
    if storage.is_uri(ref):
        loc = storage.parse_uri(ref)
        if loc.is_s3:
            return str(_resolve_remote(ref, kind))
        ref = str(loc.path)
    path = Path(ref).expanduser()
    if path.exists():
        if path.is_dir() and storage.is_published(path):
            manifest = storage.read_manifest(path)
            return str(_resolve_entry(str(path), manifest, kind, str(path), {}))
        if path.is_dir() and _is_entry_layout(path):  # an unpublished entry being assembled
            listing = storage.Manifest(
                [storage.FileEntry(rel, 0, "0" * 64) for rel in storage.list_prefix(path)]
            )

            def meta() -> dict:
                return parse_card((path / CARD_NAME).read_text(), str(path / CARD_NAME)).meta

            subdir, file = _select(listing, kind, str(path), {}, meta)
            return str(path.joinpath(*(p for p in (subdir, file) if p)))
        return str(path)
    if ref.startswith(("/", "./", "../", "~")) or str(ref).startswith("file://"):
        raise StorageError(f"{kind} path not found: {ref}")
    return ref  # a hub id (or a YAML string for recipes)


def _resolve_remote(uri: str, kind: str) -> Path:
    """An s3:// file (fetched by content hash) or published directory (materialised)."""
    loc = storage.parse_uri(uri)
    name = loc.key.rsplit("/", 1)[-1]
    if kind == "recipe" and name.endswith(RECIPE_SUFFIXES):
        return _fetch_listed(uri)
    if not storage.is_published(uri):
        if storage.exists(uri):
            return _fetch_listed(uri)
        storage.read_manifest(uri)  # raises the "never published / unfinished upload" error
    return _resolve_entry(uri, storage.read_manifest(uri), kind, uri, {})


def _fetch_listed(uri: str) -> Path:
    """Fetches one s3:// object, verified against the manifest of its directory when it has one."""
    loc = storage.parse_uri(uri)
    parent, _, name = loc.key.rpartition("/")
    parent_uri = f"s3://{loc.bucket}/{parent}" if parent else f"s3://{loc.bucket}"
    if storage.is_published(parent_uri):
        manifest = storage.read_manifest(parent_uri)
        entry = manifest.get(name)
        if entry is None:
            raise StorageError(
                f"{uri} is not listed in {parent_uri}/manifest.json: it is not part of the publish"
            )
        source = f"{storage.content_uri(parent_uri, manifest)}/{name}"
        return storage.fetch_file(source, sha256=entry.sha256, size=entry.size)
    return storage.fetch_file(uri)


def _has(manifest: storage.Manifest, subdir: str) -> bool:
    return bool(manifest.under(subdir))


def _resolve_entry(uri: str, manifest: storage.Manifest, kind: str, name: str, query: dict) -> Path:
    """Materialises the part of a published entry that `kind` asks for."""
    subdir, file = _select(manifest, kind, name, query, lambda: _read_card(uri, manifest).meta)
    folder = storage.materialize(uri, subdir=subdir or None)
    return folder / file if file else folder


def _select(
    manifest: storage.Manifest, kind: str, name: str, query: dict, card_meta
) -> tuple[str, str | None]:
    """(subdir, file) of an entry for `kind`: training/, deployment/ or the transfer recipe."""
    if kind == "recipe":
        rel = _recipe_file(manifest, name, query.get("recipe"), card_meta)
        folder, _, file = rel.rpartition("/")
        return folder, file
    subdir = "deployment" if kind == "deployment" else "training"
    if _has(manifest, subdir):
        return subdir, None
    if kind == "deployment" and _has(manifest, "training"):
        raise ZooError(f"{name} has no deployment/ (no ONNX export was published): export it first")
    if any(
        f.path.split("/")[0] in ("training", "recipe", "deployment", CARD_NAME)
        for f in manifest.files
    ):
        parts = sorted({f.path.split("/")[0] for f in manifest.files})
        raise ZooError(f"{name} has no {subdir}/ to use as a {kind}; it holds: {', '.join(parts)}")
    return "", None  # a plain model directory


def _recipe_file(manifest: storage.Manifest, name: str, wanted: str | None, card_meta) -> str:
    """The entry's transfer recipe: `?recipe=`, the card's `recipe:`, recipe/recipe.yaml, or the only one."""
    recipes = [f.path for f in manifest.under("recipe") if f.path.endswith(RECIPE_SUFFIXES)]
    if wanted:
        for candidate in (wanted, f"recipe/{wanted}", f"recipe/{wanted}.yaml"):
            if manifest.get(candidate) is not None:
                return candidate
        raise ZooError(f"{name} has no recipe '{wanted}'; it has: {', '.join(recipes) or 'none'}")
    if manifest.get(CARD_NAME) is not None:
        named = card_meta().get("recipe")
        if named:
            named = named if str(named).startswith("recipe/") else f"recipe/{named}"
            if manifest.get(named) is None:
                raise ZooError(
                    f"{name}: model.md names recipe '{named}' but the entry has no such file"
                )
            return named
    if manifest.get(DEFAULT_RECIPE) is not None:
        return DEFAULT_RECIPE
    if len(recipes) == 1:
        return recipes[0]
    if not recipes:
        raise ZooError(f"{name} holds no recipe (no recipe/*.yaml); it cannot be used as --recipe")
    raise ZooError(
        f"{name} holds several recipes ({', '.join(recipes)}) and model.md names none: "
        f"pick one with {name}?recipe=FILE"
    )


def _read_card(uri: str, manifest: storage.Manifest) -> ModelCard:
    entry = manifest.get(CARD_NAME)
    if entry is None:
        return ModelCard({}, "")
    folder = storage.content_uri(uri, manifest)
    if storage.is_remote(uri):
        path = storage.fetch_file(f"{folder}/{CARD_NAME}", sha256=entry.sha256, size=entry.size)
    else:
        path = Path(folder) / CARD_NAME
        if storage.sha256_file(path) != entry.sha256:
            raise StorageError(
                f"{path}: sha256 differs from the manifest: the card is corrupted; re-publish it"
            )
    return parse_card(path.read_text(), f"{uri}/{CARD_NAME}")


# -- push / pull ----------------------------------------------------------------------
def _is_entry_layout(directory: Path) -> bool:
    """An entry being assembled (model.md, training/, recipe/), not a model output dir: a
    training output that holds a recipe/ folder is still a training output."""
    if (directory / "config.json").is_file():
        return False
    return (directory / CARD_NAME).is_file() or any(
        (directory / d).is_dir() for d in ("training", "recipe")
    )


def _refuse_links_out(src: Path) -> None:
    """A symbolic link leaving the pushed folder (or leading nowhere) is refused: pushing
    `../../secrets/credentials` would publish it to everyone who can pull. So are named
    pipes and devices (reading one blocks or never ends)."""
    root = src.resolve()
    for folder, dirs, files in os.walk(src):
        for name in sorted(dirs + files):
            path = Path(folder) / name
            rel = path.relative_to(src)
            if not path.is_symlink():
                if not (path.is_file() or path.is_dir()):  # copying a named pipe would hang
                    raise ZooError(
                        f"cannot push {src}: {rel} is not a regular file (a named pipe, socket "
                        "or device); nothing was published"
                    )
                continue
            if not path.exists():
                raise ZooError(
                    f"cannot push {src}: {rel} is a dangling symbolic link (to "
                    f"{os.readlink(path)}); remove it or point it at a file in the folder"
                )
            target = path.resolve()
            if target != root and root not in target.parents:
                raise ZooError(
                    f"cannot push {src}: {rel} is a symbolic link to {target}, outside the "
                    "pushed folder; nothing was published (copy the file in if it belongs)"
                )


def _refuse_incomplete(staging: Path, src: Path) -> None:
    """Each part holds what its kind needs: weights and config for training/, model.onnx
    for deployment/ (a push without them printed "pushed" and broke the entry)."""
    training, deployment = staging / "training", staging / "deployment"
    if training.is_dir():
        if not (training / "config.json").is_file():
            raise ZooError(f"cannot push {src}: the training part has no config.json")
        if not any(any(training.glob(p)) for p in WEIGHT_PATTERNS):
            raise ZooError(
                f"cannot push {src}: the training part has no weights (model.safetensors or "
                "pytorch_model.bin); nothing was published"
            )
    if deployment.is_dir() and not (deployment / "model.onnx").is_file():
        raise ZooError(f"cannot push {src}: deployment/ has no model.onnx; nothing was published")


def _stage_entry(src: Path, staging: Path) -> None:
    """Copies `src` into the entry layout (training/ + recipe/ + deployment/)."""
    if _is_entry_layout(src):
        for item in src.iterdir():
            if item.name in ("manifest.json",) or item.name.startswith("."):
                continue
            if item.is_dir():
                if item.name in ("training", "recipe", "deployment"):
                    shutil.copytree(item, staging / item.name)
                else:
                    log.info("push: skipping %s (not part of a zoo entry)", item)
            elif item.name == CARD_NAME:
                shutil.copy2(item, staging / CARD_NAME)
        return
    if not (src / "config.json").is_file():
        raise ZooError(
            f"cannot push {src}: it is neither a zoo entry (training/, recipe/, model.md) nor a model "
            "output dir (config.json + weights)"
        )
    training = staging / "training"
    training.mkdir(parents=True)
    for item in sorted(src.iterdir()):
        if (
            item.is_file()
            and item.name not in _SKIP_TRAINING_FILES
            and item.name != "manifest.json"
        ):
            shutil.copy2(item, training / item.name)
        elif item.is_dir() and item.name == "deployment":
            shutil.copytree(item, staging / "deployment")
        elif item.is_dir() and item.name == "recipe":
            shutil.copytree(item, staging / "recipe")
        elif item.is_dir() or item.name in _SKIP_TRAINING_FILES:
            log.info("push: skipping %s", item.name)
    if (src / "recipe.yaml").is_file() and not (staging / "recipe" / "recipe.yaml").exists():
        (staging / "recipe").mkdir(exist_ok=True)
        shutil.copy2(src / "recipe.yaml", staging / "recipe" / "recipe.yaml")


def _facts_from_outputs(
    staging: Path, architectures: dict[str, str] | None = None
) -> dict[str, Any]:
    """Card fields read from a trained model's files (sparsity.json, eval_results.json, ...).

    `architectures` maps a head's class-name suffix to its task (the task layer's
    `architecture_tasks()`, handed down as data: the zoo sits below the tasks)."""
    facts: dict[str, Any] = {}
    training = staging / "training"

    def load(name: str) -> dict:
        try:
            return json.loads((training / name).read_text())
        except (OSError, ValueError):
            return {}

    sparsity = load("sparsity.json").get("overall_sparsity")
    if isinstance(sparsity, (int, float)):
        facts["sparsity"] = round(float(sparsity), 4)
    try:  # the precision the deployment actually holds (a recipe whose QAT never ran: fp32)
        exported = json.loads((staging / "deployment" / "export_report.json").read_text())
        facts["precision"] = "int8" if exported.get("quantized") else "fp32"
    except (OSError, ValueError, AttributeError):
        pass
    if (training / "config.json").is_file():
        facts["quantized"] = (training / "quantization.json").is_file()
        for arch in load("config.json").get("architectures") or []:
            for suffix, task in (architectures or {}).items():
                if arch.endswith(suffix):
                    facts["task"] = task
    metrics = {
        k: v
        for k, v in load("eval_results.json").items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k.startswith("eval_")
    }
    if metrics:
        facts["metrics"] = metrics
    summary = load("run_summary.json")
    if summary.get("task"):
        facts["task"] = summary["task"]
    if isinstance(summary.get("model"), str) and is_stub(summary["model"]):
        facts["parent"] = summary["model"]
    if isinstance(summary.get("teacher"), str) and summary["teacher"]:
        facts["teacher"] = summary["teacher"]
    if summary.get("command"):
        facts["training_command"] = summary["command"]
    return facts


def _non_finite_count(path: Path) -> int:
    """NaN/inf values among the floating tensors of a weights file (safetensors or ONNX)."""
    import numpy as np

    if path.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(path), load_external_data=False)
        arrays = (numpy_helper.to_array(t) for t in model.graph.initializer)
    else:
        from safetensors import safe_open

        handle = safe_open(str(path), framework="numpy")
        arrays = (handle.get_tensor(name) for name in handle.keys())  # noqa: SIM118
    return sum(
        int(a.size - np.isfinite(a).sum()) for a in arrays if np.issubdtype(a.dtype, np.floating)
    )


def _refuse_non_finite_weights(staging: Path, src: Path) -> None:
    """Nothing non-finite is published: model weights with NaN/inf are refused.

    Checks model weight files (``model*.safetensors``, ``*.onnx``); the QAT state file
    is left out, its observers may hold +-inf before their first batch.
    """
    weights = [*staging.rglob("model*.safetensors"), *staging.rglob("*.onnx")]
    for path in sorted(weights):
        try:
            bad = _non_finite_count(path)
        except Exception as exc:  # a truncated or corrupted file
            raise ZooError(
                f"cannot push {src}: {path.relative_to(staging)} is not a readable weights file "
                f"({type(exc).__name__}: {exc})"
            ) from None
        if bad:
            raise ZooError(
                f"cannot push {src}: {path.relative_to(staging)} holds {bad} NaN or infinite "
                "values; nothing was published"
            )


def push(
    local_dir: str | Path,
    stub: str | Stub,
    *,
    force: bool = False,
    parent: str | None = None,
    card: dict[str, Any] | None = None,
    root: str | Path | None = None,
    architectures: dict[str, str] | None = None,
) -> str:
    """Publishes `local_dir` as the zoo entry `stub` (atomically) and returns its URI.

    `architectures` (head class-name suffix -> task, from the task layer) lets the
    card name the task of a model whose ``run_summary.json`` does not.

    `local_dir` is either already an entry (training/, recipe/, deployment/,
    model.md) or a trained model's output dir, which is laid out as
    training/ (+ recipe/recipe.yaml from its recipe.yaml, + deployment/).
    The card's front matter merges, by priority: `card`, the existing
    model.md, facts read from the outputs (sparsity.json, eval_results.json,
    run_summary.json, quantization.json), then stub/created/parent.

    Raises:
        ZooError: the entry exists and not `force`, a malformed stub or parent, an
            unusable source directory, weights holding NaN/inf or unreadable.
    """
    stub_obj, src, uri = _push_target(local_dir, stub, parent, force, root)
    with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
        staging = Path(tmp) / "entry"
        staging.mkdir()
        _refuse_links_out(src)
        _stage_entry(src, staging)
        _refuse_incomplete(staging, src)
        _refuse_non_finite_weights(staging, src)
        _write_push_card(staging, src, stub_obj, parent, card, architectures)
        try:
            storage.upload_dir(staging, uri, overwrite=force)
        except storage.PublishConflict:
            raise ZooError(
                f"zoo entry {stub_obj} was published by someone else during this push ({uri}); "
                "this push was not kept: check it with `sparse-transfer zoo show`, then pass "
                "--force (force=True) to replace it"
            ) from None
    log.info("pushed %s to %s", stub_obj, uri)
    return uri


def _push_target(
    local_dir: str | Path, stub: str | Stub, parent: str | None, force: bool, root
) -> tuple[Stub, Path, str]:
    """The parsed stub, the source folder and the entry URI, every refusal before anything
    is staged or written (malformed stub or parent, no folder, an entry without --force)."""
    stub_obj = parse_stub(stub)
    if parent and is_stub(parent):
        try:
            parse_stub(parent)
        except ZooError as exc:
            raise ZooError(f"parent: {exc}") from None
    src = Path(local_dir)
    if not src.is_dir():
        raise ZooError(f"cannot push {src}: not a directory")
    uri = entry_uri(stub_obj, root)
    if not force and storage.is_published(uri):
        raise ZooError(
            f"zoo entry {stub_obj} already exists at {uri}; pass --force (force=True) to replace it"
        )
    return stub_obj, src, uri


def _write_push_card(
    staging: Path,
    src: Path,
    stub_obj: Stub,
    parent: str | None,
    card: dict[str, Any] | None,
    architectures: dict[str, str] | None,
) -> None:
    """The staged entry's model.md: front matter merged by priority (`card`, the existing
    card, facts read from the outputs, then stub/created/parent) and checked; an existing
    card's body is kept, else one is written from the facts and the file list."""
    existing = (
        parse_card((staging / CARD_NAME).read_text()) if (staging / CARD_NAME).is_file() else None
    )
    meta: dict[str, Any] = {"dataset": stub_obj.dataset}
    meta.update(_facts_from_outputs(staging, architectures))
    if existing:
        meta.update(existing.meta)
    meta.update(card or {})
    meta["stub"] = str(stub_obj)
    if parent:
        meta["parent"] = parent
    meta.setdefault("created", storage.now_iso())
    check_meta(meta, f"cannot push {src}: model card")
    if "sparsity" not in meta and "pruned" not in stub_obj.sparse_tag:
        meta.setdefault("sparsity", 0.0)
    if (staging / "recipe").is_dir() and "recipe" not in meta:
        recipes = sorted(
            p.name for p in (staging / "recipe").iterdir() if p.suffix in RECIPE_SUFFIXES
        )
        if "recipe.yaml" not in recipes and len(recipes) == 1:
            meta["recipe"] = f"recipe/{recipes[0]}"
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    body = existing.body if existing and existing.body.strip() else default_body(meta, files)
    (staging / CARD_NAME).write_text(ModelCard(meta, body).render())


def pull(
    stub: str | Stub, dest: str | Path, *, root: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Downloads the whole entry `stub` into `dest` (verified; atomic)."""
    uri, _ = _manifest(stub, root)
    return storage.download_dir(uri, dest, overwrite=overwrite)


# -- browsing -------------------------------------------------------------------------
def card(stub: str | Stub, *, root: str | Path | None = None) -> dict[str, Any]:
    """The front matter of the entry's model card."""
    uri, manifest = _manifest(stub, root)
    return _read_card(uri, manifest).meta


def show(stub: str | Stub, *, root: str | Path | None = None) -> dict[str, Any]:
    """Everything about one entry: uri, card fields, card body, files with sizes."""
    uri, manifest = _manifest(stub, root)
    model_card = _read_card(uri, manifest)
    return {
        "stub": str(parse_stub(stub)),
        "uri": uri,
        "card": model_card.meta,
        "body": model_card.body,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in manifest.files],
        "total_size": sum(f.size for f in manifest.files),
    }


def list_entries(
    domain: str | None = None, *, root: str | Path | None = None
) -> list[dict[str, Any]]:
    """One summary per entry (stub, task, dataset, sparsity, quantized, parent, parts), sorted by stub."""
    base = zoo_root(root)
    if not storage.is_remote(base) and not storage.parse_uri(base).path.exists():  # type: ignore[union-attr]
        return []
    out = []
    for rel in storage.list_published(base):
        parts = rel.split("/")
        if len(parts) != 7:
            continue
        try:
            stub = parse_stub("zoo:" + rel)
        except ZooError:
            continue
        if domain and domain not in (
            stub.domain,
            f"{stub.domain}/{stub.sub_domain}",
            stub.sub_domain,
        ):
            continue
        uri = entry_uri(stub, root)
        try:
            manifest = storage.read_manifest(uri)
            meta = _read_card(uri, manifest).meta
        except (StorageError, ZooError) as exc:
            log.warning("skipping %s: %s", stub, exc)
            continue
        parts_present = sorted({f.path.split("/")[0] for f in manifest.files if "/" in f.path})
        out.append(
            {
                "stub": str(stub),
                "task": meta.get("task"),
                "dataset": meta.get("dataset", stub.dataset),
                "sparsity": meta.get("sparsity"),
                "quantized": meta.get("quantized"),
                "parent": meta.get("parent"),
                "metrics": meta.get("metrics") or {},
                "parts": parts_present,
                "created": meta.get("created"),
            }
        )
    return sorted(out, key=lambda e: e["stub"])


def _norm(text: str | None) -> str:
    return (text or "").replace("-", "_").lower()


def search(
    task: str | None = None,
    min_sparsity: float | None = None,
    *,
    max_sparsity: float | None = None,
    dataset: str | None = None,
    domain: str | None = None,
    architecture: str | None = None,
    quantized: bool | None = None,
    has: str | None = None,
    root: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Entries matching every given filter.

    `task` matches the card's task or the stub's sub-domain (``-`` and ``_``
    are the same); sparsities compare against the card's `sparsity` (0..1;
    entries without one never match a sparsity filter); `has` requires a part
    (``training``, ``recipe``, ``deployment``).
    """
    for name, bound in (("min_sparsity", min_sparsity), ("max_sparsity", max_sparsity)):
        if bound is not None and not 0 <= bound <= 1:  # False for NaN too
            raise ZooError(f"--{name} {bound}: must be a number in 0..1")
    out = []
    for entry in list_entries(domain, root=root):
        stub = parse_stub(entry["stub"])
        if task and _norm(task) not in (_norm(entry["task"]), _norm(stub.sub_domain)):
            continue
        sparsity = entry["sparsity"]
        if min_sparsity is not None and (sparsity is None or float(sparsity) < min_sparsity):
            continue
        if max_sparsity is not None and (sparsity is None or float(sparsity) > max_sparsity):
            continue
        if dataset and _norm(dataset) != _norm(entry["dataset"]):
            continue
        if architecture and _norm(architecture) != _norm(stub.architecture):
            continue
        if quantized is not None and bool(entry["quantized"]) != quantized:
            continue
        if has and has not in entry["parts"]:
            continue
        out.append(entry)
    return out
