"""A small built-in instruction dataset made from the built-in Shakespeare corpus: offline, like the corpus.

Each speech of two lines or more becomes one short conversation, the task cycling through three kinds::

    user:      Continue this speech by HAMLET:
               To be, or not to be: that is the question:
    assistant: Whether 'tis nobler in the mind to suffer
               The slings and arrows of outrageous fortune,

    user:      Who speaks this line?
               Now is the winter of our discontent
    assistant: GLOUCESTER, in Richard III.

    user:      Which play is this from?
               O Romeo, Romeo! wherefore art thou Romeo?
    assistant: Romeo and Juliet.

The replies are short and end the turn, which is what a tiny model fine-tuned for a few minutes learns first:
to answer in the assistant turn and stop. Speeches come in corpus order, so the same options always give
the same conversations.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from gpt2_core.chat_template import Message

from gpt2_sft.datasets import InstructionDataset

TASKS = ("continue", "speaker", "play")


def speech_tasks(speaker: str, play: str, lines: list[str], kind: str, max_lines: int) -> list[Message]:
    """One conversation about a speech (``lines``, at least two) by ``speaker`` in ``play``.

    ``kind`` is one of :data:`TASKS`; at most ``max_lines`` lines of the speech appear in the conversation.
    """
    lines = lines[:max_lines]
    if kind == "continue":
        cut = max(1, len(lines) // 2)
        prompt = f"Continue this speech by {speaker}:\n" + "\n".join(lines[:cut])
        reply = "\n".join(lines[cut:])
    elif kind == "speaker":
        prompt, reply = f"Who speaks this line?\n{lines[0]}", f"{speaker}, in {play}."
    elif kind == "play":
        prompt, reply = "Which play is this from?\n" + "\n".join(lines[:2]), f"{play}."
    else:
        raise ValueError(f"unknown task {kind!r}; tasks are {', '.join(TASKS)}")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]


class ShakespeareInstructions(InstructionDataset):
    """Short instructions about the built-in Shakespeare plays: continue a speech, name its speaker or play."""

    @dataclass
    class Options:
        max_lines: int = 4
        """Lines of a speech used at most (short conversations fit tiny models' 128-token rows)."""
        limit: int = 0
        """At most this many conversations (0: one per speech of two lines or more, about 19,000)."""

    name = "shakespeare-chat"

    def conversations(self) -> Iterator[list[Message]]:
        """One conversation per speech of two lines or more, the task kind cycling speech by speech."""
        from gpt2_core.errors import UserError
        from gpt2_data.shakespeare import scenes

        if self.options.max_lines < 2:
            raise UserError(f"--max-lines must be >= 2, got {self.options.max_lines}")
        n = 0
        for scene in scenes():
            for speech in scene.speeches():
                if len(speech.lines) < 2:
                    continue
                if self.options.limit and n >= self.options.limit:
                    return
                kind = TASKS[n % len(TASKS)]
                yield speech_tasks(speech.speaker, scene.play, speech.lines, kind, self.options.max_lines)
                n += 1
