"""Every user-visible text of the browser client is translated into each language."""

from __future__ import annotations

import json
import re

import pytest

from veche.assets import web_root

LANGUAGES = ("en", "ru", "fr")


def _strings(lang: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((web_root() / "i18n" / f"{lang}.json").read_text("utf-8"))
    return data


def _used_keys() -> set[str]:
    keys: set[str] = set()
    for path in web_root().rglob("*.html"):
        keys |= set(re.findall(r'data-i18n(?:-placeholder|-label)?="([^"]+)"', path.read_text()))
    for path in web_root().rglob("*.js"):
        text = path.read_text()
        keys |= set(re.findall(r"""\bt\(\s*["']([\w.]+)["']""", text))
        keys |= set(re.findall(r"""setStatus\(\s*["']([\w.]+)["']""", text))
        keys |= set(re.findall(r"""setDeviceNote\(\s*["']([\w.]+)["']""", text))
        keys |= (
            {f"goodbye.{r}" for r in ("removed", "denied", "ended")}
            if "goodbye." in text
            else set()
        )
    return keys


@pytest.mark.parametrize("lang", LANGUAGES)
def test_language_has_every_key_used(lang: str) -> None:
    """Each key the pages and scripts use exists in each language, non-empty."""
    strings = _strings(lang)
    missing = sorted(key for key in _used_keys() if not strings.get(key))
    assert missing == []


@pytest.mark.parametrize("lang", ["ru", "fr"])
def test_translations_have_the_same_keys_and_placeholders(lang: str) -> None:
    """Russian and French translate exactly the English keys, keeping the {placeholders}."""
    english, other = _strings("en"), _strings(lang)
    assert set(other) == set(english)
    for key, text in english.items():
        assert set(re.findall(r"\{\w+\}", other[key])) == set(re.findall(r"\{\w+\}", text)), key
