"""firmware-config/mqtt.md against the message contract in runtimes/messages, both ways.

A plant integrator builds on mqtt.md, not on the code, so a schema, topic or payload field
the code has and the page lacks (or the reverse) is a broken promise. The page is parsed as
it is laid out: a topic table under "## Topics", the common fields in the "## Payloads"
introduction, then one "###" section per payload whose heading names its schema, with the
fields as JSON examples (fenced ```json blocks or inline `{...}` spans) and as `name` in
tables and prose.
"""
from __future__ import annotations

import dataclasses
import re

import pytest

from factoryedge import firmware_config
from factoryedge.runtimes import messages
from factoryedge.runtimes.messages import commands
from factoryedge.runtimes.messages.base import Payload

DOC_PATH = firmware_config.ROOT / "mqtt.md"
DOC = DOC_PATH.read_text(encoding="utf-8")
SCHEMA_RE = re.compile(r"factoryedge\.[a-z_]+/\d+")
NAME_RE = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")
KEY_RE = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)"\s*:')
IDENTITY = messages.Identity(site="s", line="l", machine="m", device_id="d")
ALL_SCHEMAS = sorted({*messages.BY_SCHEMA, *messages.RECEIVED})


def sections(text: str, level: str) -> dict[str, str]:
    """Heading line -> the text up to the next heading of this level or above."""
    depth = len(level)
    out: dict[str, str] = {}
    heading, body = None, []
    for line in text.splitlines():
        m = re.match(r"(#+) ", line)
        if m and len(m.group(1)) <= depth and not _in_fence(body):
            if heading is not None:
                out[heading] = "\n".join(body)
            heading, body = (line, []) if len(m.group(1)) == depth else (None, [])
            continue
        body.append(line)
    if heading is not None:
        out[heading] = "\n".join(body)
    return out


def _in_fence(lines: list[str]) -> bool:
    return sum(line.startswith("```") for line in lines) % 2 == 1  # "# comment" in a code block


def section(heading_starts: str, level: str = "##") -> str:
    found = [body for head, body in sections(DOC, level).items() if head.startswith(heading_starts)]
    if len(found) != 1:
        pytest.fail(f"{DOC_PATH}: expected one section '{heading_starts} ...', found {len(found)}", pytrace=False)
    return found[0]


def payload_section(schema: str) -> tuple[str, str]:
    """(heading, text) of the one '###' section whose heading names ``schema``."""
    found = [(head, body) for head, body in sections(DOC, "###").items() if f"`{schema}`" in head]
    if len(found) != 1:
        pytest.fail(f"{DOC_PATH}: {len(found)} '###' headings name `{schema}`; the payload needs exactly one "
                    "section, e.g. ### `topic` — `" + schema + "`", pytrace=False)
    return found[0]


def documented_names(text: str) -> set[str]:
    """Every `name` and every JSON key (at any depth) in a piece of the page."""
    return set(NAME_RE.findall(text)) | set(KEY_RE.findall(text))


def json_examples(text: str) -> list[str]:
    """The JSON examples: fenced ```json blocks and inline `{...}` spans (which may say …)."""
    fenced = re.findall(r"```json\n(.*?)```", text, re.S)
    inline = re.findall(r"`(\{.*?\})`", text, re.S)
    return fenced + inline


def top_level(example: str) -> dict[str, str | None]:
    """Keys of the outermost object -> their value if it is a string literal, else None."""
    out: dict[str, str | None] = {}
    depth, i, pending = 0, 0, None
    while i < len(example):
        c = example[i]
        if c == '"':
            j = i + 1
            while example[j] != '"':
                j += 2 if example[j] == "\\" else 1
            literal = example[i + 1 : j]
            rest = example[j + 1 :].lstrip()
            if depth == 1 and pending is None and rest.startswith(":"):
                pending = literal
                out[literal] = None
            elif depth == 1 and pending is not None:
                out[pending], pending = literal, None
            i = j + 1
            continue
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
        if depth == 1 and c == ",":
            pending = None
        i += 1
    return out


def own_fields(cls: type[Payload]) -> set[str]:
    """A payload's field names as published (alias ``schema`` for ``schema_``), minus the common ones."""
    return published_fields(cls) - published_fields(Payload)


def published_fields(cls: type[Payload]) -> set[str]:
    return {f.alias or name for name, f in cls.model_fields.items()}


# -- schemas, both ways --------------------------------------------------------------------

@pytest.mark.parametrize("schema", ALL_SCHEMAS)
def test_every_schema_of_the_code_is_documented(schema):
    assert schema in DOC, f"schema {schema} (runtimes/messages) is missing from {DOC_PATH}"


def test_every_schema_the_page_names_exists_in_the_code():
    unknown = sorted(set(SCHEMA_RE.findall(DOC)) - set(ALL_SCHEMAS))
    assert not unknown, (f"{DOC_PATH} names schemas the code does not have: {unknown}; "
                         f"runtimes/messages knows {ALL_SCHEMAS}")


# -- topics, both ways -----------------------------------------------------------------------

def code_suffixes() -> dict[str, str]:
    topics = messages.Topics.for_identity(IDENTITY)
    return {f.name: getattr(topics, f.name)[len(topics.base) + 1 :]
            for f in dataclasses.fields(topics) if f.name != "base"}


def test_the_topic_table_lists_exactly_the_topics_of_the_code():
    table = section("## Topics")
    rows = {m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", table, re.M)}
    code = code_suffixes()
    missing = {name: suffix for name, suffix in code.items() if suffix not in rows}
    assert not missing, f"Topics.for_identity has {missing} but the '## Topics' table of {DOC_PATH} does not"
    extra = sorted(rows - set(code.values()))
    assert not extra, f"the '## Topics' table of {DOC_PATH} lists {extra}, which Topics.for_identity does not make"


# -- payload fields --------------------------------------------------------------------------

def test_the_common_fields_are_described_where_the_payloads_begin():
    intro = section("## Payloads").split("\n### ")[0]
    missing = sorted(published_fields(Payload) - documented_names(intro))
    assert not missing, f"common payload fields {missing} are not described in '## Payloads' of {DOC_PATH}"


@pytest.mark.parametrize("schema", sorted(messages.BY_SCHEMA))
def test_every_field_of_a_payload_is_described_in_its_section(schema):
    cls = messages.BY_SCHEMA[schema]
    heading, text = payload_section(schema)
    missing = sorted(own_fields(cls) - documented_names(text))
    assert not missing, f"{cls.__name__} fields {missing} are not described under '{heading}' in {DOC_PATH}"


@pytest.mark.parametrize("schema", sorted(messages.BY_SCHEMA))
def test_an_example_payload_shows_only_fields_that_exist(schema):
    cls = messages.BY_SCHEMA[schema]
    examples = [top_level(e) for e in json_examples(DOC)]
    mine = [keys for keys in examples if keys.get("schema") == schema]
    assert mine, f"{DOC_PATH} has no JSON example with \"schema\": \"{schema}\""
    for keys in mine:
        extra = sorted(set(keys) - published_fields(cls))
        assert not extra, f"the {schema} example in {DOC_PATH} shows {extra}, which {cls.__name__} does not have"


def test_a_command_documents_its_fields_every_command_and_every_argument():
    heading, text = payload_section(messages.COMMAND)
    fields = {f.name for f in dataclasses.fields(messages.Command)} | {"schema"}
    missing = sorted(fields - documented_names(text))
    assert not missing, f"command fields {missing} are not described under '{heading}' in {DOC_PATH}"
    table = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| ([^|]*)\|", text, re.M)}
    for name in messages.COMMANDS:
        assert name in table, f"command {name!r} has no row in the command table under '{heading}' in {DOC_PATH}"
        args = set(commands._ARGS[name].model_fields)
        undocumented = sorted(args - set(NAME_RE.findall(table[name])))
        assert not undocumented, f"arguments {undocumented} of {name!r} are missing from its row in {DOC_PATH}"


def test_every_decision_reason_is_explained():
    heading, text = payload_section(messages.DECISION)
    rows = {m.group(1) for m in re.finditer(r"^\| `(\w+)` \|", text, re.M)}
    missing = sorted(set(messages.REASONS) - rows)
    assert not missing, f"decision reasons {missing} have no row in the reason table under '{heading}' in {DOC_PATH}"


def test_the_page_points_at_the_code_that_builds_the_payloads():
    for old in ("sinks/payloads.py", "`payloads.py`", "inspection/decision.py", "runtimes.scorer"):
        assert old not in DOC, f"{DOC_PATH} still names {old!r}; the contract lives in runtimes/messages"
    assert "factoryedge.runtimes.messages" in DOC
