"""The Markdown reference of every signalling message, generated from :mod:`veche.protocol`.

``python -m veche.schema`` writes it to ``docs/protocol-messages.md``. It walks the JSON Schema of
both unions (the one the browser's files come from) and every other public model of the
protocol module, so a message added there appears with its fields and no list needs updating.
Descriptions are the class docstrings and ``Field`` descriptions; the enumerations are the
``Literal`` aliases and enums of the protocol module, described by the docstrings written under
them (read from the source, since Python keeps no attribute docstrings).
"""

from __future__ import annotations

import ast
import enum
import inspect
import itertools
import json
import re
import typing
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter

from veche import protocol

__all__ = ["FILE", "render"]

FILE = "protocol-messages.md"
"""The reference's file name, in ``docs/``."""

_REF = "#/$defs/{model}"
_SOURCE = "server/veche/protocol.py"
_ROLE = re.compile(r":(?:class|data|func|mod|attr|meth|exc):`(~?)([\w.]+)`")


def _docstrings(owner: object) -> dict[str, str]:
    """The docstrings written under the assignments of a module's or a class's body."""
    tree = ast.parse(inspect.getsource(owner))  # type: ignore[arg-type]
    body = tree.body
    if inspect.isclass(owner):
        (node,) = body
        assert isinstance(node, ast.ClassDef)
        body = node.body
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        target = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign):
            target = node.target
        if (
            isinstance(target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[target.id] = inspect.cleandoc(after.value.value)
    return docs


def _md(text: str, tags: dict[str, str]) -> str:
    """reST inline markup to Markdown, each paragraph on one line; a role naming a message's
    model (``tags``: model name -> message type) becomes a link to that message."""

    def role(match: re.Match[str]) -> str:
        name = match[2].rsplit(".", 1)[-1] if match[1] else match[2]
        tag = tags.get(name)
        return f"[`{tag}`]({_anchor(tag)})" if tag else f"`{name}`"

    text = _ROLE.sub(role, text.replace("``", "`"))
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _anchor(name: str) -> str:
    """GitHub's anchor of a heading that is only ``name`` in backticks."""
    return "#" + name.lower()


class _Reference:
    def __init__(self) -> None:
        self.docs = _docstrings(protocol)
        namespace = vars(protocol)
        self.aliases = {
            name: typing.get_args(value)
            for name, value in namespace.items()
            if not name.startswith("_") and typing.get_origin(value) is Literal
        }
        self.enums = [
            value
            for value in namespace.values()
            if inspect.isclass(value)
            and issubclass(value, enum.Enum)
            and value.__module__.startswith("veche.")
        ]
        client = protocol.CLIENT_ADAPTER.json_schema(ref_template=_REF)
        server = protocol.SERVER_ADAPTER.json_schema(ref_template=_REF)
        self.defs: dict[str, Any] = {**client.get("$defs", {}), **server.get("$defs", {})}
        self.client = [self._name(option) for option in client["oneOf"]]
        self.server = [self._name(option) for option in server["oneOf"]]
        self.others: list[str] = []
        for name, value in namespace.items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseModel)
                and value.__module__ == protocol.__name__
                and not name.startswith("_")
                and name not in self.defs
            ):
                extra = TypeAdapter(value).json_schema(ref_template=_REF)
                self.defs.update(extra.pop("$defs", {}))
                self.defs[name] = extra
                self.others.append(name)
        self.tags = {name: self._tag(name) for name in self.defs if self._is_message(name)}

    def md(self, text: str) -> str:
        return _md(text, self.tags)

    def cell(self, text: str) -> str:
        """``text`` for a table cell: one line, pipes escaped."""
        return " ".join(self.md(text).split()).replace("|", "\\|")

    def summary(self, text: str) -> str:
        """The first sentence of a description."""
        return re.split(r"(?<=[.!?])\s", self.cell(text), maxsplit=1)[0]

    @staticmethod
    def _name(schema: dict[str, Any]) -> str:
        return str(schema["$ref"]).rsplit("/", 1)[-1]

    def _is_message(self, name: str) -> bool:
        return "const" in self.defs[name].get("properties", {}).get("type", {})

    def _tag(self, name: str) -> str:
        return str(self.defs[name]["properties"]["type"]["const"])

    def _link(self, name: str) -> str:
        if name in self.defs and self._is_message(name):
            tag = self._tag(name)
            return f"[`{tag}`]({_anchor(tag)})"
        return f"[`{name}`]({_anchor(name)})"

    # ------------------------------------------------------------------ types

    def type_of(self, schema: dict[str, Any]) -> str:
        if "$ref" in schema:
            return self._link(self._name(schema))
        if "const" in schema:
            return f"`{_json(schema['const'])}`"
        if "enum" in schema:
            values = tuple(schema["enum"])
            for alias, members in self.aliases.items():
                if members == values:
                    return self._link(alias)
            return " or ".join(f"`{_json(value)}`" for value in values)
        if "anyOf" in schema:
            options = [o for o in schema["anyOf"] if o.get("type") != "null"]
            return " or ".join(self.type_of(option) for option in options)
        kind = schema.get("type")
        if kind == "string":
            return "string" + _bounds(schema, "minLength", "maxLength", "characters")
        if kind in ("integer", "number"):
            low, high = schema.get("minimum"), schema.get("maximum")
            if low is not None and high is not None:
                return f"{kind} from {low} to {high}"
            return str(kind)
        if kind == "array":
            items = self.type_of(schema.get("items", {}))
            items = f"({items})" if "," in items else items
            return f"list of {items}" + _bounds(schema, "minItems", "maxItems", "items")
        if kind == "object" and "additionalProperties" in schema:
            keys = "string" + _bounds(
                schema.get("propertyNames", {}), "", "maxLength", "characters"
            )
            mapped = self.type_of(schema["additionalProperties"])
            entries = _bounds(schema, "minProperties", "maxProperties", "entries")
            keys = f"({keys})" if "," in keys else keys
            return f"object: {keys} → {mapped}{entries}"
        return {"boolean": "boolean", "object": "object"}.get(str(kind), "any")

    # ------------------------------------------------------------------ sections

    def fields(self, name: str, skip: set[str]) -> str:
        schema = self.defs[name]
        required = set(schema.get("required", ()))
        rows = []
        for prop, sub in schema.get("properties", {}).items():
            if prop in skip:
                continue
            if prop in required:
                need = "yes"
            elif sub.get("default") is not None:
                need = f"no (default `{_json(sub['default'])}`)"
            else:
                need = "no"
            rows.append(
                (f"`{prop}`", self.type_of(sub), need, self.cell(sub.get("description", "")))
            )
        if not rows:
            return "No fields besides `type`.\n" if "type" in skip else "No fields.\n"
        return _table(("field", "type", "required", "description"), rows)

    def entry(self, name: str, skip: set[str]) -> str:
        schema = self.defs[name]
        title = self._tag(name) if self._is_message(name) else name
        text = f"### `{title}`\n\n"
        if schema.get("description"):
            text += self.md(schema["description"]) + "\n\n"
        return text + self.fields(name, skip)

    def render(self) -> str:
        both = [name for name in self.client if name in self.server]
        client = [name for name in self.client if name not in both]
        server = [name for name in self.server if name not in both]
        messages = {*self.client, *self.server}
        payloads = sorted(
            name
            for name in self.defs
            if name not in messages and name not in self.others and "properties" in self.defs[name]
        )
        common = set.intersection(
            *(set(self.defs[name].get("properties", {})) for name in self.client)
        ) - {"type"}
        skip_client = common | {"type"}

        out = [
            f"# Signalling messages, protocol version {protocol.PROTOCOL_VERSION}\n",
            f"Generated by `python -m veche.schema` from [`{_SOURCE}`](../{_SOURCE}); do not "
            "edit. [The protocol](protocol.md) explains the terms, the sequences and the rules; "
            "this page lists every message and its fields. Each message is one JSON object in a "
            "WebSocket text frame, named by its `type`. Bounds in the *type* column are what the "
            "parser accepts; limits a room applies after parsing (such as `MAX_CHAT_LENGTH`) are "
            "in the descriptions.\n",
            "## Index\n",
            _table(
                ("message", "sent by", "summary"),
                [
                    (
                        self._link(name),
                        "client" if name in client else "server" if name in server else "both",
                        self.summary(self.defs[name].get("description", "")),
                    )
                    for name in (*client, *server, *both)
                ],
            ),
            "## Client to server\n",
        ]
        if common:
            first = self.defs[self.client[0]]["properties"]
            shared = ", ".join(f"`{p}` ({self.type_of(first[p])})" for p in sorted(common))
            out.append(
                f"Every client message may also carry {shared}, left out of the tables below."
                + (
                    " An `error` or `pong` caused by a message with an `id` repeats it as `ref`."
                    if "id" in common
                    else ""
                )
                + "\n"
            )
        out += [self.entry(name, skip_client) for name in client]
        out += [
            "## Server to client\n",
            "The server leaves out every field whose value is `null`.\n",
        ]
        out += [self.entry(name, {"type"}) for name in server]
        if both:
            out.append("## Both directions\n")
            out += [self.entry(name, skip_client) for name in both]
        out.append("## Objects inside messages\n")
        out += [self.entry(name, set()) for name in payloads]
        if self.others:
            out.append(f"## Other models of `{_SOURCE}`\n")
            out += [self.entry(name, set()) for name in self.others]
        out.append("## Enumerations\n")
        out += [self.enum_entry(value) for value in self.enums]
        out += [self.alias_entry(name, values) for name, values in self.aliases.items()]
        out.append("## Constants\n")
        out.append(self.constants())
        return "\n".join(out)

    def enum_entry(self, cls: type[enum.Enum]) -> str:
        docs = _docstrings(cls)
        text = f"### `{cls.__name__}`\n\n"
        if cls.__doc__:
            text += self.md(cls.__doc__) + "\n\n"
        rows = [
            (f"`{_json(member.value)}`", f"`{member.name}`", self.cell(docs.get(member.name, "")))
            for member in cls
        ]
        return text + _table(("value", "name", "meaning"), rows)

    def alias_entry(self, name: str, values: tuple[object, ...]) -> str:
        text = f"### `{name}`\n\n"
        doc = self.docs.get(name, "")
        rows = _split_by_value(doc, values)
        if rows is not None:
            intro = self.md(doc.split(":", 1)[0]) + ":"
            cells = [(value, self.cell(meaning)) for value, meaning in rows]
            return text + intro + "\n\n" + _table(("value", "meaning"), cells)
        text += "One of " + ", ".join(f"`{_json(value)}`" for value in values) + ".\n"
        return text + ("\n" + self.md(doc) + "\n" if doc else "")

    def constants(self) -> str:
        rows = []
        for name in protocol.__all__:
            value = getattr(protocol, name)
            if name in self.docs and isinstance(value, (int, float, str, tuple)):
                shown = " ".join(map(str, value)) if isinstance(value, tuple) else _json(value)
                rows.append((f"`{name}`", shown, self.cell(self.docs[name])))
        return _table(("name", "value", "meaning"), rows)


def _bounds(schema: dict[str, Any], low_key: str, high_key: str, unit: str) -> str:
    low, high = schema.get(low_key), schema.get(high_key)
    if low is not None and high is not None:
        return f", {low} to {high} {unit}"
    if high is not None:
        return f", at most {high} {unit}"
    if low is not None:
        return f", at least {low} {unit}"
    return ""


def _split_by_value(doc: str, values: tuple[object, ...]) -> list[tuple[str, str]] | None:
    """Rows of a docstring written as ``intro: ``a`` means...; ``b`` means...``, or None when it
    is not written so."""
    doc = " ".join(doc.split())
    if ":" not in doc:
        return None
    parts = [part.strip() for part in doc.split(":", 1)[1].strip().rstrip(".").split("; ")]
    if len(parts) != len(values):
        return None
    rows = []
    for value, part in zip(values, parts, strict=True):
        mark = f"``{value}``"
        if not part.startswith(mark):
            return None
        rows.append((f"`{_json(value)}`", part[len(mark) :].strip() + "."))
    return rows


def render() -> str:
    """The reference, as Markdown."""
    return _Reference().render().rstrip("\n") + "\n"
