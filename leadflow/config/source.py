"""Reading YAML with positions: every key and value keeps its line and column.

PyYAML's composer gives nodes with marks; we walk them once to build the data (safe tags
only) and a map from key path to position, and to catch duplicate keys, which plain
``safe_load`` silently lets the last one win.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based
    quoted: bool = False


@dataclass(frozen=True)
class Issue:
    """One problem in a user-edited file, printed as ``FILE:LINE:COL: key.path: message``."""

    file: str
    line: int
    column: int
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return _visible(f"{self.file}:{self.line}:{self.column}: {where}{self.message}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _visible(text: str) -> str:
    """One line, and nothing a terminal acts on: a key written ``"\\r"`` or ``"\\e[2J"`` in
    YAML is shown as that escape, never sent to the terminal as a control character."""
    return _CONTROL.sub(lambda m: ascii(m.group())[1:-1], text)


class ConfigError(Exception):
    """The configuration (or a template) is invalid; carries every issue found."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class YamlDocument:
    file: str
    text: str
    data: Any
    positions: dict[Path_, Position] = field(default_factory=dict)
    key_positions: dict[Path_, Position] = field(default_factory=dict)

    def position(self, path: Path_, *, key: bool = False) -> Position:
        """The position of ``path``, or of its nearest existing ancestor."""
        probe = tuple(path)
        while True:
            table = self.key_positions if key else self.positions
            if probe in table:
                return table[probe]
            if probe in self.positions:
                return self.positions[probe]
            if not probe:
                return Position(1, 1)
            probe = probe[:-1]

    def issue(
        self,
        path: Path_,
        message: str,
        *,
        key: bool = False,
        offset: int | None = None,
        severity: str = "error",
    ) -> Issue:
        """An issue at ``path``; ``offset`` points inside a scalar (e.g. a rule's column)."""
        pos = self.position(path, key=key)
        column = pos.column
        if offset is not None:
            column += offset + (1 if pos.quoted else 0)
        return Issue(self.file, pos.line, column, format_path(path), message, severity)


# Limits on what a pipeline file may be: the real file has a few hundred values. Aliases are
# allowed (anchors keep a file DRY), but each use counts as the values it expands to, so an
# "alias bomb" (nine levels of nine aliases: 387 million values) stops at the budget instead
# of growing past gigabytes.
MAX_BYTES = 1_000_000
MAX_VALUES = 100_000
MAX_DEPTH = 40


# Plain mappings and lists only: a tag on a collection (``!!python/object/apply:os.system
# [...]``, ``!!set``, ``!Ref``) is refused, never silently read as a plain mapping or list.
_PLAIN: dict[type[yaml.Node], str] = {
    yaml.MappingNode: "tag:yaml.org,2002:map",
    yaml.SequenceNode: "tag:yaml.org,2002:seq",
}


class _Refused(Exception):
    """The file is too large or deep, or uses what a pipeline file may not; ``node`` is where."""

    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.node = node


class _Walker:
    def __init__(self, doc: YamlDocument) -> None:
        self.doc = doc
        self.issues: list[Issue] = []
        self.constructor = yaml.SafeLoader("")
        self.values = 0

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise _Refused(
                node,
                f"the file expands to more than {MAX_VALUES:,} values "
                "(aliases of aliases?); see docs/pipeline-yaml.md",
            )
        if len(path) > MAX_DEPTH:
            raise _Refused(node, f"nested deeper than {MAX_DEPTH} levels")
        self.doc.positions[path] = Position(
            node.start_mark.line + 1,
            node.start_mark.column + 1,
            isinstance(node, yaml.ScalarNode) and node.style in ("'", '"'),
        )
        plain = _PLAIN.get(type(node))
        if plain is not None and node.tag != plain:
            raise _Refused(node, f"YAML error: the tag '{node.tag}' is not allowed here")
        if isinstance(node, yaml.MappingNode):
            self.constructor.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._construct(key_node)
                if not isinstance(key, str | int | float | bool) or key is None:
                    key = str(key)
                key_path = (*path, str(key))
                if key in out:
                    self.issues.append(
                        Issue(
                            self.doc.file,
                            key_node.start_mark.line + 1,
                            key_node.start_mark.column + 1,
                            format_path(key_path),
                            f"duplicate key '{key}' (first defined on line "
                            f"{self.doc.key_positions[key_path].line})",
                        )
                    )
                    continue
                self.doc.key_positions[key_path] = Position(
                    key_node.start_mark.line + 1, key_node.start_mark.column + 1
                )
                out[key] = self.build(value_node, key_path)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._construct(node)

    def _construct(self, node: yaml.Node) -> Any:
        """A scalar (or a complex key) as PyYAML's safe constructor reads it; a value it
        cannot convert (``2026-02-30``, an integer of 5,000 digits) is an error at the node."""
        try:
            return self.constructor.construct_object(node, deep=True)
        except (ValueError, OverflowError) as exc:
            value = node.value if isinstance(node, yaml.ScalarNode) else "this value"
            shown = value if len(value) <= 40 else value[:39] + "…"
            raise _Refused(node, f"YAML error: cannot read {shown!r}: {exc}") from None


def load_yaml(path: Path) -> YamlDocument:
    """Parse ``path`` safely; raises ConfigError with positions for syntax and duplicate keys."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Issue(file, 1, 1, "", "file not found")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Issue(file, 1, 1, "", f"not UTF-8 text: {exc.reason}")]) from None
    except (IsADirectoryError, PermissionError) as exc:
        raise ConfigError([Issue(file, 1, 1, "", f"cannot read: {exc.strerror}")]) from None
    return parse_yaml(text, file)


def parse_yaml(text: str, file: str) -> YamlDocument:
    doc = YamlDocument(file=file, text=text, data=None)
    if len(text) > MAX_BYTES:
        raise ConfigError(
            [Issue(file, 1, 1, "", f"the file is larger than {MAX_BYTES:,} characters")]
        )
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        raise ConfigError(
            [Issue(file, line, col, "", f"YAML syntax error: {problem}{context}")]
        ) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (a control one)
        start = text.rfind("\n", 0, exc.position) + 1
        line, col = text.count("\n", 0, exc.position) + 1, exc.position - start + 1
        message = str(exc).splitlines()[0]
        raise ConfigError([Issue(file, line, col, "", f"YAML error: {message}")]) from None
    except yaml.YAMLError as exc:
        message = " ".join(str(exc).split())
        raise ConfigError([Issue(file, 1, 1, "", f"YAML error: {message}")]) from None
    if node is None:
        raise ConfigError([Issue(file, 1, 1, "", "the file is empty")])
    walker = _Walker(doc)
    try:
        doc.data = walker.build(node, ())
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigError([Issue(file, line, col, "", f"YAML error: {exc.problem}")]) from None
    except _Refused as exc:
        mark = exc.node.start_mark
        raise ConfigError([Issue(file, mark.line + 1, mark.column + 1, "", str(exc))]) from None
    if walker.issues:
        raise ConfigError(walker.issues)
    return doc
