"""The generated copy of schema.capnp's nodes that ``cara compile -o-`` writes requests with.

``cara/cli/_request_schema_nodes.py`` is a cache: it must hold exactly the nodes the shipped
``cara.std.schema_capnp`` module gives once adjusted to Cap'n Proto 0.9.2's layout, and must be
what the generator writes today (regenerate with ``python -m cara.cli.request_schema``).
"""

from __future__ import annotations

import pytest

from cara.cli import commands, request_schema
from cara.codecs.capnp import request_codec

REGENERATE = "stale: run `python -m cara.cli.request_schema` and commit the result"


def test_cached_nodes_equal_the_shipped_module_adjusted_to_092() -> None:
    assert request_schema.cached_nodes() == request_schema.current_nodes(), REGENERATE


def test_generated_file_is_what_the_generator_writes() -> None:
    rendered = request_schema.render(request_schema.current_nodes())
    assert request_schema.GENERATED.read_text(encoding="utf-8") == rendered, REGENERATE


def test_cli_provider_uses_the_cached_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(request_codec, "_provider", None)
    monkeypatch.setattr(request_codec, "_default_codec", None)
    commands.use_shipped_schema_nodes()
    provider = request_codec._provider
    assert provider is not None
    assert list(provider()) == request_schema.current_nodes()
