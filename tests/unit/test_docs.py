"""The README and docs/ stay true: settings, links, protocol terms and the import order."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

import pytest

from veche.protocol import GoodbyeReason, ParticipantInfo
from veche.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = sorted(DOCS.glob("*.md"))


def _text(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _shown(value: object) -> str:
    """A default as the configuration table writes it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return f"`{','.join(map(str, value))}`" if value else "empty"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_configuration_documents_setting(name: str) -> None:
    """Each setting has a row naming it, its environment variable and its default."""
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    row = f"| `{name}` | `VECHE_{name.upper()}` | {_shown(default)} |"
    assert row in _text("configuration.md")


def test_readme_quickstart_is_make_run_and_make_test() -> None:
    """The quickstart is the two commands."""
    quickstart = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    assert "make run" in quickstart
    assert "make test" in quickstart


@pytest.mark.parametrize("page", [path.name for path in PAGES])
def test_readme_links_to_docs_page(page: str) -> None:
    """The README is the way in to every page of docs/."""
    assert f"](docs/{Path(page).name})" in README


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.DOTALL), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("source", ["README.md", *(f"docs/{path.name}" for path in PAGES)])
def test_relative_links_resolve(source: str) -> None:
    """Every relative link names a file of the repository and, with ``#``, one of its
    headings."""
    path = ROOT / source
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{source}: {target}"
        if anchor:
            assert anchor in _anchors(linked.read_text(encoding="utf-8")), f"{source}: {target}"


def test_protocol_page_names_participant_fields_and_goodbye_reasons() -> None:
    """docs/protocol.md has not drifted from protocol.py on what it lists by name."""
    text = _text("protocol.md")
    for name in ParticipantInfo.model_fields:
        assert f"`{name}`" in text, name
    for reason in typing.get_args(GoodbyeReason):
        assert f"`{reason}`" in text, reason


def _layers() -> dict[str, int]:
    """Module -> layer, from the numbered list in docs/architecture.md."""
    section = _text("architecture.md").split("## Layers and import order\n", 1)[1]
    layers: dict[str, int] = {}
    for number, item in re.findall(r"^(\d+)\. (.+)$", section.split("\n## ", 1)[0], re.M):
        for name in re.findall(r"`([\w/]+)`", item.split(":", 1)[0]):
            layers[name.strip("/")] = int(number)
    return layers


def _imports(tree: ast.AST) -> set[str]:
    """The ``veche`` modules a file imports, outside ``if TYPE_CHECKING:`` blocks."""
    found: set[str] = set()
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            found |= set().union(*(_imports(child) for child in node.orelse))
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "veche":
                found |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "veche" and len(parts) > 1:
                    found.add(parts[1])
        found |= _imports(node)
    return found


def test_imports_follow_the_documented_layers() -> None:
    """A module listed in the architecture's layers imports only modules of layers above it."""
    layers = _layers()
    package = ROOT / "server" / "veche"
    for name in layers:
        assert (package / f"{name}.py").is_file() or (package / name).is_dir(), name
    for path in sorted(package.rglob("*.py")):
        module = path.relative_to(package).parts[0].removesuffix(".py")
        if module not in layers:
            continue
        for imported in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if imported in layers and imported != module:
                assert layers[imported] < layers[module], f"{module} imports {imported}"
