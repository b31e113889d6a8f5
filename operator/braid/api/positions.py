"""Where a field path is in the YAML text it came from: `spec.steps[2].when` -> line 14,
column 7, from PyYAML's node marks. An error names its file:line:col, as compilers do."""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

_TOKEN = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")


@dataclass(frozen=True)
class Position:
    line: int  # from 1
    column: int  # from 1


def tokens(path: str) -> list[str | int]:
    """`spec.steps[2].when` -> ["spec", "steps", 2, "when"]."""
    out: list[str | int] = []
    for index, name in _TOKEN.findall(path):
        out.append(int(index) if index else name)
    return out


def documents(text: str) -> list[yaml.Node]:
    """The text's YAML documents as nodes, empty ones left out (as parse_documents does)."""
    try:
        return [d for d in yaml.compose_all(text, Loader=yaml.SafeLoader) if d is not None]
    except yaml.YAMLError:
        return []


def locate(document: yaml.Node, path: str) -> Position:
    """The position of the deepest node along ``path`` that exists: the field itself, or for
    a field that is missing, the mapping that lacks it. A mapping key's own position is given
    for its last token (an unknown field is its key)."""
    node = document
    mark = node.start_mark
    for token in tokens(path):
        if isinstance(node, yaml.MappingNode) and isinstance(token, str):
            found = next((pair for pair in node.value if pair[0].value == token), None)
            if found is None:
                break
            key, node = found
            mark = key.start_mark
        elif isinstance(node, yaml.SequenceNode) and isinstance(token, int):
            if token >= len(node.value):
                break
            node = node.value[token]
            mark = node.start_mark
        else:
            break
    return Position(mark.line + 1, mark.column + 1)
