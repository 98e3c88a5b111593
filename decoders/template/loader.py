"""Loading a template file: YAML → parameters substituted → validated model.

Strategy: every mistake becomes one :class:`~decoders.errors.TemplateError` naming the file,
the path inside it (``catalog.901F.layouts.0.2.size``) and, when the YAML still has it, the
line — whether the mistake is YAML syntax, a reference to an undeclared ``$parameter``, or a
schema violation found by the pydantic models of :mod:`decoders.template.model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from decoders.errors import TemplateError
from decoders.template.model import FrameTemplate

__all__ = ["format_path", "line_of", "load_document", "substitute", "validate"]

PathPart = str | int

#: libyaml's safe loader when the C extension is there (10× faster), else the Python one.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def format_path(path: Sequence[PathPart]) -> str:
    return ".".join(str(p) for p in path)


def load_document(path: Path | str, text: str | None = None) -> tuple[dict[str, Any], Any]:
    """The parsed YAML mapping and its node tree (for line numbers)."""
    name = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise TemplateError(f"cannot read the template: {exc.strerror}", file=name) \
                from exc
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader (C or Python)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise TemplateError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
                            file=name, line=mark.line + 1 if mark else None) from exc
    if not isinstance(data, dict):
        raise TemplateError("a template is a YAML mapping (key: value) at the top level",
                            file=name, line=1)
    return data, node


def line_of(node: Any, path: Sequence[PathPart]) -> int | None:
    """1-based line of ``path`` in a composed YAML node tree (best effort)."""
    line = None
    for part in path:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            found = None
            for key, value in node.value:
                if key.value == str(part) or _same_int(key.value, part):
                    found = value
                    line = key.start_mark.line + 1
                    break
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                and part < len(node.value):
            node = node.value[part]
        else:
            break
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _same_int(text: str, part: PathPart) -> bool:
    try:
        return int(text, 0) == int(part)
    except (TypeError, ValueError):
        return False


def substitute(data: Any, parameters: dict[str, Any], file: str, node: Any,
               path: tuple[PathPart, ...] = ()) -> Any:
    """Replace every ``"$name"`` string with the parameter's value."""
    if isinstance(data, str) and data.startswith("$"):
        key = data[1:]
        if key not in parameters:
            raise TemplateError(f"unknown parameter ${key}; declared: "
                                f"{sorted(parameters) or 'none'}", file=file,
                                path=format_path(path), line=line_of(node, path))
        return parameters[key]
    if isinstance(data, dict):
        return {k: (v if not path and k in ("parameters", "variants")
                    else substitute(v, parameters, file, node, (*path, k)))
                for k, v in data.items()}
    if isinstance(data, list):
        return [substitute(v, parameters, file, node, (*path, i)) for i, v in enumerate(data)]
    return data


def validate(data: dict[str, Any], file: str, node: Any) -> FrameTemplate:
    """Validate against the model; the first problem becomes a TemplateError."""
    try:
        return FrameTemplate.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(p for p in first["loc"] if not _is_union_tag(p))
        reason = first["msg"]
        if first["type"] == "extra_forbidden":
            reason = f"unknown key {loc[-1]!r}"
        elif first["type"] == "missing":
            reason = f"required key {loc[-1]!r} is missing"
        if len(exc.errors()) > 1:
            reason += f" (and {len(exc.errors()) - 1} more problem(s))"
        hint = None
        if loc and loc[0] == "catalog" and first["type"] == "string_type":
            hint = "quote data identifiers in YAML (\"9010\"), or they are read as numbers"
        raise TemplateError(reason, file=file, path=format_path(loc),
                            line=line_of(node, loc), hint=hint) from None


def _is_union_tag(part: Any) -> bool:
    # pydantic inserts the union member tried ("str", "ElementSpec", "int") into the path
    return isinstance(part, str) and (part in {"str", "int", "ElementSpec", "IdentifierParam",
                                               "constrained-str", "literal['rest']"}
                                      or part.startswith(("function-", "literal[")))
