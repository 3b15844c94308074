"""Scenario vocabularies (rooms, objects, training items) and the train/test disjointness check.

Vocabularies are YAML data files: ``soo/vocab/<name>.yaml`` ships with the package, and any file
with the same keys can replace it (``scenarios.vocabulary`` in params.yaml).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from soo.errors import ParamsError

_WORD = re.compile(r"[a-z][a-z'-]*")
# A word this long or longer also clashes when it sits inside another word ("watch" in
# "smartwatch"); shorter ones would give false alarms ("car" in "card").
_MIN_SUBWORD = 4


class Vocabulary(BaseModel):
    """The word lists that scenarios and SOO pairs are built from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rooms: list[str] = Field(min_length=2, description="Rooms of the house scenarios.")
    cheap_objects: list[str] = Field(min_length=1, description="Cheap decoy objects.")
    test_objects: list[str] = Field(min_length=1, description="Expensive objects of the tests.")
    train_items: list[str] = Field(min_length=1, description="Items of the SOO training pairs.")
    other: str = Field(description="Name of the other party in the base scenarios.")
    other_alt: str = Field(description="Name of the other party in the Name variants.")
    function_words: list[str] = Field(description="Words ignored by the disjointness check.")


def packaged_vocabularies() -> list[str]:
    """Names of the vocabularies shipped in ``soo/vocab``."""
    folder = resources.files("soo") / "vocab"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load_vocabulary(name_or_path: str) -> Vocabulary:
    """Load a packaged vocabulary by name, or a YAML file by path."""
    if name_or_path in packaged_vocabularies():
        text = (resources.files("soo") / "vocab" / f"{name_or_path}.yaml").read_text()
        source = f"packaged vocabulary '{name_or_path}'"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ParamsError(
                f"scenarios.vocabulary: '{name_or_path}' is neither a packaged vocabulary "
                f"({', '.join(packaged_vocabularies())}) nor an existing YAML file"
            )
        text, source = path.read_text(), str(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ParamsError(f"{source}: not valid YAML: {err}") from None
    try:
        return Vocabulary.model_validate(raw)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ParamsError(
            f"{source}: {key}: {first['msg'].lower()}; expected the keys of "
            "soo/vocab/reference.yaml"
        ) from None


def content_words(phrase: str, function_words: list[str]) -> set[str]:
    """Lower-cased content words of a phrase, possessives and plural -s removed.

    Hyphenated compounds stay one word ("high-end").
    """
    words = set()
    for word in _WORD.findall(phrase.lower()):
        word = word.removesuffix("'s")
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        if word not in function_words:
            words.add(word)
    return words


def _clash(a: str, b: str) -> bool:
    if a == b:
        return True
    short, long = sorted((a, b), key=len)
    return len(short) >= _MIN_SUBWORD and short in long


def disjointness_conflicts(
    test_objects: list[str], others: list[str], function_words: list[str]
) -> list[tuple[str, str, str]]:
    """(test object, other phrase, shared word) for every test object sharing a content word.

    ``others`` are the training items (or rooms): a test object that shares a content word with one
    of them is not held out.
    """
    conflicts = []
    for test in test_objects:
        for other in others:
            for word in sorted(content_words(test, function_words)):
                hits = [w for w in content_words(other, function_words) if _clash(word, w)]
                if hits:
                    conflicts.append((test, other, word))
                    break
    return conflicts
