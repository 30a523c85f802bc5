"""Tab completion for the human monitor: which words may come next on a line.

Pure logic over the console's own tables (command names, ``info``
subcommands, capability and parameter names), so it can never offer a word
the console would refuse.  Legacy names still work when typed, but Tab
offers the modern ones only, which steers people to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Vocabulary:
    """The words a console knows, by position on the line."""

    commands: Sequence[str]
    info: Sequence[str]
    capabilities: Sequence[str]
    parameters: Sequence[str]
    #: Commands whose first argument is another command's name.
    about_commands: frozenset[str] = field(default_factory=lambda: frozenset({"help", "?"}))


def _starting(prefix: str, words: Iterable[str]) -> list[str]:
    return sorted({w for w in words if w.startswith(prefix)})


def complete(before_cursor: str, vocabulary: Vocabulary) -> list[str]:
    """Candidates for the word being typed at the end of ``before_cursor``."""
    words = before_cursor.split(" ")
    done, prefix = [w for w in words[:-1] if w], words[-1]
    if not done:
        return _starting(prefix, vocabulary.commands)
    command, position = done[0], len(done)
    if command == "info" and position == 1:
        return _starting(prefix, vocabulary.info)
    if command in vocabulary.about_commands and position == 1:
        return _starting(prefix, [*vocabulary.commands, "info"])
    if command == "migrate_set_capability":
        if position == 1:
            return _starting(prefix, vocabulary.capabilities)
        if position == 2:
            return _starting(prefix, ("on", "off"))
    if command == "migrate_set_parameter" and position == 1:
        return _starting(prefix, vocabulary.parameters)
    if command == "migrate" and position == 1:
        return _starting(prefix, ("-d",))
    return []
