"""The documents a reader of the repository gets: the HTTP reference is complete, and no link
leads outside the repository except to a public address."""

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

API_DOC = ROOT / "docs" / "api.md"
ROUTE_ROW = re.compile(r"^\| (GET|POST|PUT|PATCH|DELETE) \| `([^`]+)` \|", re.MULTILINE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)|<((?:https?://)[^>\s]+)>")
THE_SERVICE_ITSELF = re.compile(r"https?://(127\.0\.0\.1|localhost)(:\d+)?(/|$)")


def documented_routes() -> set[tuple[str, str]]:
    return set(ROUTE_ROW.findall(API_DOC.read_text()))


def test_every_route_in_the_schema_is_documented(client):
    schema = client.get("/openapi.json").json()
    served = {(method.upper(), path) for path, operations in schema["paths"].items() for method in operations}

    assert served - documented_routes() == set()


def test_every_documented_route_is_served(client):
    schema = client.get("/openapi.json").json()
    served = {(method.upper(), path) for path, operations in schema["paths"].items() for method in operations}

    assert documented_routes() - served == set()


def markdown_files() -> list[Path]:
    """Every Markdown file of the repository, not of the virtualenv or the caches beside it."""
    return sorted(
        path for path in ROOT.rglob("*.md") if not any(part.startswith(".") for part in path.relative_to(ROOT).parts)
    )


@pytest.mark.parametrize("document", markdown_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_links_stay_in_the_repository_or_go_to_public_addresses(document):
    outside = []
    for match in LINK.finditer(document.read_text()):
        target = (match.group(1) or match.group(2)).split("#")[0]
        if not target or THE_SERVICE_ITSELF.match(target):
            continue
        if re.match(r"https?://", target):
            continue
        resolved = (document.parent / target).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            outside.append(target)

    assert outside == []
