"""A chapter's parameters: the grammar of its ``parameters`` cell, and the checks made before it runs.

Each line of the cell reads ``NAME: type = literal  # help text  {allowed}``; the type is one of :data:`TYPES`.
The optional ``{allowed}`` at the end of the comment says which values the chapter accepts:

=======================  ========================================================================================
``{>= 1}``, ``{> 0}``    bounds: ``>=``, ``>``, ``<=``, ``<`` a number, several joined by commas (``{> 0, <= 1}``)
``{0..1}``               an inclusive range
``{a | b | ""}``         one of these strings (``""``: the empty string)
``{file}``, ``{folder}``  a file / a folder / either (``{path}``) that must exist when the value is not empty; a
                         relative value is taken under ``$DFBOOK_DATA`` (:func:`dfbook.paths.resolve_data_path`)
``{chapters}``           chapter names (notebooks in the notebooks folder) whose outputs this chapter reads: the
                         runner runs them first (:func:`dfbook.runner.order`)
=======================  ========================================================================================

For a ``list`` the rule applies to every element. The runner checks each value -- from the profile's YAML and
from ``-p NAME VALUE`` -- before papermill starts, so a wrong value costs a second and names the parameter and
the allowed values; paths are not checked in a dry run, which reads no data. :func:`check_chapter` (called by
``dfbook.report.start``) makes the same checks when the notebook is run by hand, e.g. in JupyterLab.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from pathlib import Path

from dfbook import paths

TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (list,), "dict": (dict,)}
PATH_KINDS = {"file": Path.is_file, "folder": Path.is_dir, "path": Path.exists}
_ALLOWED = re.compile(r"\{([^{}]*)\}\s*$")
_BOUND = re.compile(r"(>=|>|<=|<)\s*(-?[0-9.]+(?:e-?[0-9]+)?)")
_RANGE = re.compile(r"(-?[0-9.]+)\s*\.\.\s*(-?[0-9.]+)")
_COMPARE = {">=": float.__ge__, ">": float.__gt__, "<=": float.__le__, "<": float.__lt__}


class ParameterError(ValueError):
    """A chapter cannot be started (unknown chapter, bad parameter); the message says how to fix it."""


def parameters_cell(nb) -> int:
    idx = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(idx) != 1:
        raise ParameterError(f"notebook needs exactly one cell tagged 'parameters', found {len(idx)}")
    return idx[0]


def parse_parameters(source: str) -> dict[str, dict]:
    """``NAME: type = literal  # help  {allowed}`` lines -> ``{NAME: {"type", "default", "help", "allowed"}}``
    (``allowed``: the text in braces, or ``""``)."""
    params = {}
    lines = source.splitlines()
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None):
            raise ParameterError(f"parameters cell line {node.lineno}: expected `NAME: type = literal  # comment`")
        name = node.target.id
        try:
            default = ast.literal_eval(node.value)
        except ValueError:
            raise ParameterError(f"parameter {name}: default must be a literal, got `{ast.unparse(node.value)}`") from None
        line = lines[node.lineno - 1]
        comment = line.split("#", 1)[1].strip() if "#" in line else ""
        allowed = _ALLOWED.search(comment)
        params[name] = {"type": ast.unparse(node.annotation), "default": default,
                        "help": comment[:allowed.start()].strip() if allowed else comment,
                        "allowed": allowed.group(1).strip() if allowed else ""}
        if allowed:
            _rule(name, params[name]["allowed"])  # a typo in the rule fails here, not when a value is checked
    return params


def _rule(name: str, text: str):
    """``{allowed}`` text -> ``(kind, data)``: ``("path", kind)``, ``("bounds", [(op, number)])`` or
    ``("choices", [str])``."""
    if text in PATH_KINDS:
        return "path", text
    if text == "chapters":
        return "chapters", None
    if m := _RANGE.fullmatch(text):
        return "bounds", [(">=", float(m.group(1))), ("<=", float(m.group(2)))]
    parts = [p.strip() for p in text.split(",")]
    if any(p[:1] in "<>" for p in parts):
        bounds = [_BOUND.fullmatch(p) for p in parts]
        if not all(bounds):
            raise ParameterError(f"parameter {name}: cannot read the rule {{{text}}}; write e.g. {{>= 1}}, "
                                 "{> 0, <= 1} or {0..1}")
        return "bounds", [(b.group(1), float(b.group(2))) for b in bounds]
    return "choices", ["" if c.strip() == '""' else c.strip() for c in text.split("|")]


def _problem(rule, value, files: bool) -> str | None:
    """What ``value`` must be under ``rule``, or None when it is fine."""
    kind, data = rule
    if kind == "bounds":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        bad = [f"{op} {bound:g}" for op, bound in data if not _COMPARE[op](float(value), bound)]
        return f"must be {' and '.join(bad)}" if bad else None
    if kind == "choices":
        return None if value in data else f"must be one of {', '.join(repr(c) for c in data)}"
    if kind == "chapters":
        known = sorted(p.stem for p in paths.notebooks_dir().glob("*.md"))
        return None if value in known else f"must be a chapter ({', '.join(known)})"
    if not files or value in ("", None):
        return None
    path = paths.resolve_data_path(str(value))
    if PATH_KINDS[data](path):
        return None
    what = "does not exist" if not path.exists() else f"is not a {data}"
    return f"{path} {what} (a relative path is taken under $DFBOOK_DATA = {paths.data_dir()})"


def check_values(chapter: str, spec: dict[str, dict], values: Mapping, origin: str, *, files: bool = True) -> None:
    """Raise :class:`ParameterError` for an unknown name, a value of the wrong type, or one its ``{allowed}``
    rule refuses (paths only with ``files``), naming the parameter, where the value came from and what is
    allowed."""
    for name, value in values.items():
        if name not in spec:
            raise ParameterError(f"{chapter}: unknown parameter {name!r} ({origin}); known: {', '.join(sorted(spec))}")
        info = spec[name]
        expected = TYPES.get(info["type"])
        bad_bool = isinstance(value, bool) and info["type"] in ("int", "float")
        if expected and (not isinstance(value, expected) or bad_bool):
            raise ParameterError(f"{chapter}: parameter {name} expects {info['type']} (default {info['default']!r}), "
                                 f"got {value!r} ({type(value).__name__}) from {origin}")
        if not info.get("allowed"):
            continue
        rule = _rule(name, info["allowed"])
        for item in value if isinstance(value, list) else [value]:
            why = _problem(rule, item, files)
            if why:
                element = f" (element {item!r})" if isinstance(value, list) else ""
                raise ParameterError(f"{chapter}: parameter {name} = {value!r}{element} from {origin}: {why}; "
                                     f"allowed {{{info['allowed']}}} -- {info['help']}")


def check_chapter(chapter: str, values: Mapping) -> None:
    """The runner's checks of ``values`` (a notebook's globals), for a chapter run by hand. Needs the chapter's
    source in the notebooks folder; a notebook run from elsewhere is not checked."""
    source = paths.notebooks_dir() / f"{chapter}.md"
    if not source.is_file():
        return
    import jupytext

    nb = jupytext.read(source)
    spec = parse_parameters(nb.cells[parameters_cell(nb)].source)
    check_values(chapter, spec, {k: v for k, v in values.items() if k in spec}, "the notebook's parameters",
                 files=not values.get("DRY_RUN", False))
