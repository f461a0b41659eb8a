"""Zoo stubs and model cards: parsing, errors that name the missing parts, round trips."""

from __future__ import annotations

import pytest

from sparse_transfer.errors import ZooError
from sparse_transfer.zoo import ModelCard, parse_card, parse_stub
from sparse_transfer.zoo._stub import stub_query

REF = "zoo:nlp/masked_language_modeling/obert-base/pytorch/huggingface/wikipedia_bookcorpus/pruned90-none"


def test_reference_stub_parses_into_its_seven_parts():
    stub = parse_stub(REF)
    assert stub.domain == "nlp"
    assert stub.sub_domain == "masked_language_modeling"
    assert stub.architecture == "obert-base"
    assert (stub.framework, stub.repo) == ("pytorch", "huggingface")
    assert stub.dataset == "wikipedia_bookcorpus"
    assert stub.sparse_tag == "pruned90-none"
    assert str(stub) == REF
    assert stub.path == REF.removeprefix("zoo:")


def test_partial_stub_names_the_missing_parts():
    with pytest.raises(ZooError) as info:
        parse_stub("zoo:nlp/sentiment_analysis")
    message = str(info.value)
    assert "names 2 of 7 parts" in message
    assert "missing: ARCHITECTURE, FRAMEWORK, REPO, DATASET, SPARSE_TAG" in message
    assert "zoo:DOMAIN/SUB_DOMAIN/ARCHITECTURE/FRAMEWORK/REPO/DATASET/SPARSE_TAG" in message


def test_empty_middle_part_is_named():
    with pytest.raises(ZooError, match="names 6 of 7 parts; missing: FRAMEWORK"):
        parse_stub("zoo:nlp/sentiment_analysis/minilm-l6//huggingface/sst2/base-none")


def test_too_many_parts_and_bad_characters():
    with pytest.raises(ZooError, match="has 8 parts, expected 7.*extra: more"):
        parse_stub(REF + "/more")
    with pytest.raises(ZooError, match=r"invalid characters in DATASET='sst 2'"):
        parse_stub("zoo:nlp/sentiment_analysis/minilm-l6/pytorch/huggingface/sst 2/base-none")
    with pytest.raises(ZooError, match="not a zoo stub"):
        parse_stub("nlp/sentiment_analysis")
    with pytest.raises(ZooError, match=r"DATASET='\.\.'"):
        parse_stub("zoo:nlp/sentiment_analysis/minilm-l6/pytorch/huggingface/../base-none")


def test_stub_query_options():
    stub = REF + "?recipe=dense_teacher.yaml"
    assert parse_stub(stub).sparse_tag == "pruned90-none"
    assert stub_query(stub) == {"recipe": "dense_teacher.yaml"}


def test_model_card_round_trip():
    meta = {
        "stub": REF,
        "task": "masked-language-modeling",
        "dataset": "wikipedia_bookcorpus",
        "sparsity": 0.9,
        "quantized": False,
        "metrics": {"eval_loss": 2.5},
        "parent": None,
        "training_command": "sparse-transfer train masked-language-modeling --x 1",
        "created": "2024-01-01T00:00:00Z",
    }
    text = ModelCard(meta, "# Title\n\nBody text.").render()
    assert text.startswith("---\nstub: ")
    back = parse_card(text)
    assert back.meta == meta
    assert back.body.strip() == "# Title\n\nBody text."


def test_model_card_errors():
    with pytest.raises(ZooError, match="never closed"):
        parse_card("---\ntask: x\n")
    with pytest.raises(ZooError, match="must be a mapping"):
        parse_card("---\n- a\n---\nbody")
    with pytest.raises(ZooError, match="not valid YAML"):
        parse_card("---\ntask: [\n---\n")
    assert parse_card("no front matter").meta == {}
