"""Field paths in JSON bodies (C{$.items[3].price}) and the rules that ignore them.

A path is written from the root C{$} with C{.name} or C{["any key"]} for an
object's key and C{[3]} for an array's element.  An ignore rule may also use
C{.*} (any key of an object) and C{[*]} (any element of an array); it ignores
the field it names and everything below it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

from attrs import frozen

Step = str | int
"""One step down a JSON document: an object's key or an array's index."""

_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NAME = re.compile(r"[^.\[\]\"\s]+")
_INDEX = re.compile(r"\[(\d+)\]")
_DECODER = json.JSONDecoder()


def format_key(key: str) -> str:
    """The path step for an object's key: C{.name} or C{["odd key"]}."""
    if _SIMPLE_KEY.match(key):
        return "." + key
    return "[" + json.dumps(key, ensure_ascii=False) + "]"


def format_path(steps: Iterable[Step]) -> str:
    """Render steps from the root as C{$.items[3].price} or C{$["odd key"]}."""
    parts = ["$"]
    for step in steps:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        else:
            parts.append(format_key(step))
    return "".join(parts)


@frozen
class Matcher:
    """One step of an ignore rule: a key, an index, any key or any index."""

    key: str | None = None
    index: int | None = None
    any_key: bool = False
    any_index: bool = False

    def matches(self, step: Step) -> bool:
        """Whether C{step} (a key or an index) is what this step names."""
        if isinstance(step, int):
            return self.any_index or self.index == step
        return self.any_key or self.key == step


@frozen
class IgnoreRule:
    """A compiled ignore rule: the field it names and its subtree are ignored."""

    text: str
    steps: tuple[Matcher, ...]

    def matches(self, path: Sequence[Step]) -> bool:
        """Whether the field at C{path} (steps from the root) is ignored."""
        if len(path) < len(self.steps):
            return False
        return all(m.matches(s) for m, s in zip(self.steps, path, strict=False))


def compile_ignore(text: str) -> IgnoreRule:
    """Compile an ignore rule such as C{$.items[*].cacheKey}.

    @raise ValueError: the rule is not a valid path, with a message saying
        where and why.
    """
    if not text.startswith("$"):
        raise ValueError(f"path {text!r} must start with '$' (the body's root)")
    steps: list[Matcher] = []
    pos = 1
    while pos < len(text):
        char = text[pos]
        if char == ".":
            pos += 1
            if text.startswith("*", pos):
                steps.append(Matcher(any_key=True))
                pos += 1
                continue
            name = _NAME.match(text, pos)
            if name is None:
                raise ValueError(
                    f"path {text!r}: expected a key name or '*' after '.' "
                    f"at position {pos}"
                )
            steps.append(Matcher(key=name.group()))
            pos = name.end()
        elif char == "[":
            pos, matcher = _bracket(text, pos)
            steps.append(matcher)
        else:
            raise ValueError(
                f"path {text!r}: expected '.' or '[' at position {pos}, found {char!r}"
            )
    return IgnoreRule(text=text, steps=tuple(steps))


def _bracket(text: str, pos: int) -> tuple[int, Matcher]:
    """Parse C{[3]}, C{[*]} or C{["key"]} starting at C{pos} (the C{[})."""
    if text.startswith("[*]", pos):
        return pos + 3, Matcher(any_index=True)
    index = _INDEX.match(text, pos)
    if index is not None:
        return index.end(), Matcher(index=int(index.group(1)))
    if text.startswith('["', pos):
        try:
            key, end = _DECODER.raw_decode(text, pos + 1)
        except ValueError:
            raise ValueError(
                f"path {text!r}: unterminated or invalid quoted key "
                f"at position {pos + 1}"
            ) from None
        if text.startswith("]", end):
            return end + 1, Matcher(key=key)
        raise ValueError(f"path {text!r}: expected ']' at position {end}")
    raise ValueError(
        f"path {text!r}: expected an index, '*' or a quoted key after '[' "
        f"at position {pos}"
    )


Progress = tuple[tuple[IgnoreRule, int], ...]
"""The ignore rules still matching along a path, with how many steps they matched."""


@frozen
class IgnoreSet:
    """Several ignore rules, followed step by step while walking a document.

    Walking down costs nothing when no rule is given, and only the rules
    whose prefix matched so far are looked at.
    """

    rules: tuple[IgnoreRule, ...]

    @classmethod
    def compile(cls, texts: Iterable[str]) -> IgnoreSet:
        """Compile each rule (L{compile_ignore}'s C{ValueError} when invalid)."""
        return cls(tuple(compile_ignore(text) for text in texts))

    def start(self) -> Progress | None:
        """The progress at the root; None when the root itself is ignored."""
        if any(not rule.steps for rule in self.rules):
            return None
        return tuple((rule, 0) for rule in self.rules)

    def descend(self, progress: Progress, step: Step) -> Progress | None:
        """The progress one C{step} down; None when that field is ignored."""
        if not progress:
            return progress
        following = []
        for rule, done in progress:
            if rule.steps[done].matches(step):
                if done + 1 == len(rule.steps):
                    return None
                following.append((rule, done + 1))
        return tuple(following)

    def ignores(self, path: Sequence[Step]) -> bool:
        """Whether the field at C{path} is ignored by any rule."""
        return any(rule.matches(path) for rule in self.rules)
