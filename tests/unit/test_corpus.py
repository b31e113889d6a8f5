"""Every hostile manifest of the corpus is refused by Braid's own validation (what `braid lint`,
`braid run` and the operator use), with the field path named, quickly and without a crash."""

from __future__ import annotations

import json

import pytest
import yaml

from braid.api.errors import InvalidSpecError
from braid.api.manifests import parse_documents
from braid.engine.validate import validate_manifests
from tests.corpus import CASES


def problems(manifest: dict) -> list[str]:
    try:
        parsed = parse_documents(json.dumps(manifest))
    except InvalidSpecError as exc:
        return [str(e) for e in exc.errors]
    return [str(e) for e in validate_manifests(parsed)]


def test_the_corpus_is_large_and_its_ids_unique():
    assert len(CASES) >= 50
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_hostile_manifest_is_refused_naming_the_field(case):
    found = problems(case.manifest)
    assert found, f"{case.id} was accepted"
    assert any(p.startswith(case.path) for p in found), found
    assert all(len(p) < 5_000 for p in found), "errors stay readable, even for huge input"


def test_the_corpus_survives_yaml_too():
    for case in CASES[:10]:
        text = yaml.safe_dump(case.manifest)
        assert problems(yaml.safe_load(text))
