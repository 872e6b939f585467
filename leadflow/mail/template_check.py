"""Static checks of template files: what ``validate`` finds without rendering anything.

Unknown names and keys (with "did you mean"), loops nested too deep, templates that are
missing or do not extend the layout. ``TemplateSet.check`` runs it; the test render with
sample data that follows is in rendering.py.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from leadflow.mail.context import MESSAGE_KEYS, SENDER_KEYS, TEMPLATE_GLOBALS
from leadflow.mail.sandbox import MAX_LOOP_DEPTH
from leadflow.suggest import did_you_mean


@dataclass(frozen=True)
class TemplateProblem:
    """One finding of ``TemplateSet.check``; ``line`` is 0 when no line applies."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.message}"
            if self.line
            else f"{self.file}: {self.message}"
        )


_CALLABLE_LOOKUPS = frozenset({"get"})


def _lookup_key(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return node.arg.value if isinstance(node.arg.value, str) else None
    return None


class SourceChecker:
    """Parses template files and reports problems without rendering anything."""

    def __init__(
        self,
        env: ImmutableSandboxedEnvironment,
        directory: Path,
        lead_keys: Collection[str],
        attribute_keys: Collection[str],
    ) -> None:
        self._env = env
        self._directory = directory
        self._fields: dict[str, Collection[str]] = {
            "lead": frozenset(lead_keys),
            "sender": SENDER_KEYS,
            "message": MESSAGE_KEYS,
        }
        self._attribute_keys = frozenset(attribute_keys)
        self._seen: set[str] = set()
        self.problems: list[TemplateProblem] = []
        self.fatal = False  # no point in a test render (syntax error, missing file or block)

    def _report(self, path: Path, line: int, message: str) -> None:
        self.problems.append(TemplateProblem(str(path), line, message))

    def check_file(self, filename: str, *, require_subject: bool) -> None:
        if filename in self._seen:
            return
        self._seen.add(filename)
        path = self._directory / filename
        source = path.read_text(encoding="utf-8")
        try:
            ast = self._env.parse(source, filename, str(path))
        except TemplateSyntaxError as exc:
            self.fatal = True
            self._report(path, exc.lineno, f"syntax error: {exc.message}")
            return

        if require_subject and not any(b.name == "subject" for b in ast.find_all(nodes.Block)):
            self.fatal = True
            self._report(path, 1, "template does not define {% block subject %}")
        self._check_names(path, ast)
        self._check_fields(path, ast)
        self._check_loops(path, ast)
        for ref in meta.find_referenced_templates(ast):
            if ref is None:
                self._report(path, 0, "extends/include with a computed template name")
            elif not (self._directory / ref).is_file():
                self.fatal = True
                self._report(path, 0, f"references missing template {ref!r}")
            else:
                self.check_file(ref, require_subject=False)

    def _check_loops(self, path: Path, node: nodes.Node, depth: int = 0) -> None:
        """Loops nested deeper than MAX_LOOP_DEPTH: a few loops over a lead's text already
        make millions of iterations, with or without output."""
        for child in node.iter_child_nodes():
            inner = depth + isinstance(child, nodes.For)
            if inner > MAX_LOOP_DEPTH:
                self.fatal = True
                self._report(path, child.lineno, f"loops nested deeper than {MAX_LOOP_DEPTH}")
                return
            self._check_loops(path, child, inner)

    def _check_names(self, path: Path, ast: nodes.Template) -> None:
        for name in sorted(meta.find_undeclared_variables(ast) - TEMPLATE_GLOBALS):
            line = next(
                (n.lineno for n in ast.find_all(nodes.Name) if n.name == name and n.ctx == "load"),
                0,
            )
            hint = did_you_mean(name, TEMPLATE_GLOBALS) or (
                f"; available: {', '.join(sorted(TEMPLATE_GLOBALS))}"
            )
            self._report(path, line, f"unknown variable {name!r}{hint}")

    def _known(self, node: nodes.Node) -> tuple[str, Collection[str]] | None:
        """The dotted path and allowed keys when ``node`` is a checked mapping."""
        if isinstance(node, nodes.Name) and node.name in self._fields:
            return node.name, self._fields[node.name]
        if (
            isinstance(node, nodes.Getattr | nodes.Getitem)
            and isinstance(node.node, nodes.Name)
            and node.node.name == "lead"
            and _lookup_key(node) == "attributes"
        ):
            return "lead.attributes", self._attribute_keys
        return None

    def _check_key(
        self, path: Path, line: int, owner: str, keys: Collection[str], key: str
    ) -> None:
        if key in keys:
            return
        if owner == "lead.attributes":
            declared = ", ".join(sorted(keys)) if keys else "none"
            hint = (
                did_you_mean(key, keys, prefix="lead.attributes.")
                or f"; declared attributes: {declared}"
            )
        else:
            hint = did_you_mean(key, keys, prefix=f"{owner}.")
        self._report(path, line, f"unknown field {owner}.{key}{hint}")

    def _check_fields(self, path: Path, ast: nodes.Template) -> None:
        method_nodes: set[int] = set()
        for call in ast.find_all(nodes.Call):
            callee = call.node
            if not isinstance(callee, nodes.Getattr) or callee.attr not in _CALLABLE_LOOKUPS:
                continue
            known = self._known(callee.node)
            if known is None:
                continue
            method_nodes.add(id(callee))
            first = call.args[0] if call.args else None
            if isinstance(first, nodes.Const) and isinstance(first.value, str):
                self._check_key(path, call.lineno, known[0], known[1], first.value)

        for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
            if not isinstance(node, nodes.Getattr | nodes.Getitem):
                continue
            key = _lookup_key(node)
            known = self._known(node.node)
            if key is None or known is None or id(node) in method_nodes:
                continue
            self._check_key(path, node.lineno, known[0], known[1], key)
