"""Read a flow YAML file into a checked ``Flow``, naming file, line and question on errors."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent

from flows.compose import compose
from flows.errors import FlowError, Problem
from flows.policy import POLICY, SafetyPolicy
from flows.schema import Flow, FlowFile

__all__ = ["MAX_FLOW_CHARS", "checksum", "load_flow_text", "shipped_flow_path"]

_KINDS = {
    "choice",
    "yesno",
    "checklist",
    "text",
    "phone",
    "info",
    "triage",
    "confirm",
    "end",
    "screening",
}
#: The largest flow file accepted (the shipped one is about a quarter of it).
MAX_FLOW_CHARS = 200_000
_LANG_NAMES = {"ru": "Russian (ru)", "en": "English (en)"}


def shipped_flow_path(name: str = "intake") -> Path:
    """Return the path of a flow shipped with the package."""
    return Path(str(resources.files("flows") / "definitions" / f"{name}.yaml"))


def checksum(text: str) -> str:
    """Return the short content checksum that names a flow version.

    Short enough to read and type, too short to tell contents apart: two texts with the same
    one can be made in minutes. Whatever stands for a text's proof is keyed by
    ``content_key``.
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def content_key(text: str) -> str:
    """Return the full SHA-256 of ``text``: what a proof of that text is kept under."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_flow_text(
    text: str,
    *,
    origin: str = "flow",
    policy: SafetyPolicy = POLICY,
    values: Mapping[str, str] | None = None,
) -> Flow:
    """Validate flow YAML ``text`` and compose it with the safety policy's screening core.

    ``origin`` names the text in error messages; ``values`` fills ``{phone}`` and
    ``{hours}`` in the admin's texts.
    """
    if len(text) > MAX_FLOW_CHARS:
        size = f"{len(text) // 1000} thousand characters"
        msg = f"the file is too large ({size}; at most {MAX_FLOW_CHARS // 1000} thousand)"
        raise FlowError([Problem(msg, file=origin)])
    _refuse_deep_nesting(text, origin)  # first: the YAML scanner slows with the depth
    _refuse_aliases(text, origin)
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
    except (MarkedYAMLError, YAMLError) as exc:
        raise FlowError([_yaml_problem(exc, origin)]) from exc
    if not isinstance(data, dict):
        raise FlowError([Problem("the file must be a mapping with name, nodes, rules…", origin)])
    try:
        file = FlowFile.model_validate(_plain(data))
    except ValidationError as exc:
        problems = [_problem(err, data, origin) for err in exc.errors()]
        raise FlowError(problems) from exc
    try:
        flow = compose(file, policy, values=values)
    except FlowError as exc:
        raise FlowError([_placed(p, data, origin) for p in exc.problems]) from exc
    return flow.model_copy(update={"version": checksum(text)})


#: How deep a flow file may nest (indentation steps and brackets together): the shipped flow
#: needs 6; the YAML parser recurses per level, and a file of thousands of levels would
#: exhaust its stack or the check's time.
MAX_NESTING = 40


def _refuse_deep_nesting(text: str, origin: str) -> None:
    """Refuse, with its line, a file nested deeper than ``MAX_NESTING`` levels."""
    brackets = 0
    for number, line in enumerate(text.splitlines(), 1):
        body = line.lstrip(" ")
        if not body or body.startswith("#"):
            continue
        indent = (len(line) - len(body)) // 2
        quote = ""
        deepest = brackets
        for ch in body:
            if quote:
                quote = "" if ch == quote else quote
            elif ch in "\"'":
                quote = ch
            elif ch == "#":
                break
            elif ch in "[{":
                brackets += 1
                deepest = max(deepest, brackets)
            elif ch in "]}":
                brackets = max(brackets - 1, 0)
        if indent + deepest > MAX_NESTING:
            msg = (
                f"the file nests {indent + deepest} levels deep here; a flow needs far fewer "
                f"(at most {MAX_NESTING}): write the lists and conditions out flatter"
            )
            raise FlowError([Problem(msg, file=origin, line=number)])


def _yaml_problem(exc: Exception, origin: str) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return Problem(f"this is not valid YAML ({problem})", file=origin, line=line)


def _refuse_aliases(text: str, origin: str) -> None:
    """Refuse anchors and aliases before anything is built: they can multiply a small file
    into gigabytes, and a flow has no need of them."""
    try:
        for event in YAML(typ="safe").parse(text):
            if isinstance(event, AliasEvent) or getattr(event, "anchor", None):
                mark = event.start_mark
                line = mark.line + 1 if mark is not None else None
                msg = (
                    "YAML anchors and aliases (& and *) are not allowed in a flow file; "
                    "write each text out in full"
                )
                raise FlowError([Problem(msg, file=origin, line=line)])
    except (MarkedYAMLError, YAMLError) as exc:
        raise FlowError([_yaml_problem(exc, origin)]) from exc


def _placed(problem: Problem, data: Any, origin: str) -> Problem:
    """Give a composition problem the line of its question."""
    line = None
    nodes = data.get("nodes") if isinstance(data, CommentedMap) else None
    if problem.node and isinstance(nodes, CommentedMap) and problem.node in nodes:
        line = nodes.lc.key(problem.node)[0] + 1
    return Problem(problem.message, file=origin, line=line, node=problem.node)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _line(data: Any, loc: tuple[int | str, ...]) -> int | None:
    """Follow ``loc`` through ruamel's commented data and return the deepest known line."""
    line: int | None = None
    node = data
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedMap | CommentedSeq) and line is None:
            line = node.lc.line + 1
        else:
            continue
    if line is None and isinstance(data, CommentedMap):
        line = 1
    return line


def _clean_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop pydantic's union branch names so the path matches the YAML."""
    out: list[int | str] = []
    for i, part in enumerate(loc):
        kind_tag = i == 2 and loc[0] == "nodes" and part in _KINDS
        if kind_tag or (isinstance(part, str) and ("[" in part or part.startswith("function"))):
            continue
        if part == "in_":
            part = "in"
        if part == "not_":
            part = "not"
        out.append(part)
    return tuple(out)


def _problem(err: Any, data: Any, origin: str) -> Problem:
    loc = _clean_loc(tuple(err["loc"]))
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc = (*loc, "kind")
    node = str(loc[1]) if len(loc) > 1 and loc[0] == "nodes" else None
    where = ".".join(str(p) for p in (loc[2:] if node else loc))
    kind = err["type"]
    if kind.startswith("union_tag"):
        where = ""
    if kind == "missing" and loc and loc[-1] in _LANG_NAMES:
        msg = f"the {_LANG_NAMES[str(loc[-1])]} translation is missing"
        where = ".".join(str(p) for p in (loc[2:-1] if node else loc[:-1]))
    elif kind == "missing":
        msg = f"'{loc[-1]}' is required but missing" if loc else "a required key is missing"
        where = ".".join(str(p) for p in (loc[2:-1] if node else loc[:-1]))
    elif kind == "extra_forbidden":
        msg = f"unknown key '{loc[-1]}' (check the spelling)"
        where = ".".join(str(p) for p in (loc[2:-1] if node else loc[:-1]))
    elif kind == "string_pattern_mismatch":
        msg = (
            f"'{err.get('input')}' is not a valid id: use lowercase latin letters, digits "
            "and _, starting with a letter, at most 24 characters"
        )
    elif kind == "union_tag_invalid":
        msg = (
            f"unknown kind '{err['ctx'].get('tag')}'; use one of: "
            "choice, yesno, checklist, text, phone, info, triage, confirm, end, screening"
        )
    elif kind == "union_tag_not_found":
        msg = "every question needs a kind (choice, yesno, checklist, text, phone, info, …)"
    elif kind == "value_error":
        msg = str(err["msg"]).removeprefix("Value error, ")
    elif kind == "literal_error":
        msg = f"'{err.get('input')}' is not allowed here; expected {err['ctx'].get('expected')}"
    elif kind == "too_short":
        msg = "this list needs more entries"
    else:
        msg = str(err["msg"])
    if where:
        msg = f"{where}: {msg}"
    return Problem(msg, file=origin, line=_line(data, loc), node=node)
