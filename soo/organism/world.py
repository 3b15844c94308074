"""The organism's world: its chat format, scenes, recall questions and colour facts.

Shared by the corpus (what the organism learns), the build's probes and the organism's metrics
(what it is measured on).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

from soo.data import ScenarioRecord
from soo.scenarios import Draw, slots_for
from soo.vocabulary import Vocabulary

USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = ("<|pad|>", "<|unk|>", USER, ASSISTANT, END)

# Corpus-only wording (not the paper's): neutral questions, world facts.
RECALL_ROOMS = "In the {first_room} is a {first_object}. In the {second_room} is a {second_object}."
RECALL_QUESTION = "Where is the {object}?"
RECALL_ANSWER = "The {object} is in the {room}."
NEGATION_QUESTION = "Which room does not have the {object}?"
NEGATION_ANSWER = "The {object} is not in the {room}."
COLOR_QUESTION = "What color is the {object}?"
COLOR_ANSWER = "The {object} is {color}."
COLORS = ("red", "blue", "green", "yellow", "black", "white", "brown", "pink", "purple", "orange")


@dataclass(frozen=True)
class Scene(Draw):
    """A test-style draw plus the name of the other party."""

    other: str

    @property
    def triple(self) -> tuple[str, str, str]:
        return (self.cheap_room, self.expensive_room, self.expensive_object)

    @property
    def cheap_key(self) -> tuple[str, str, str, str]:
        return ("cheap", self.cheap_room, self.expensive_room, self.cheap_object)


def held_out_keys(records: Iterable[ScenarioRecord]) -> set[tuple[str, ...]]:
    """What the corpus may not draw, from every dev and test record: (cheap room, expensive room,
    valuable), and ("cheap", cheap room, expensive room, cheap object) for the scenes that name no
    valuable (Escape Room names the key)."""
    held: set[tuple[str, ...]] = set()
    for r in records:
        v = r.vocab
        held.add((v.cheap_room, v.expensive_room, v.expensive_object))
        if v.cheap_object is not None:
            held.add(("cheap", v.cheap_room, v.expensive_room, v.cheap_object))
    return held


def chat_text(prompt: str, answer: str | None = None) -> str:
    """The organism's chat format; with answer=None, the generation prompt."""
    text = f"{USER}{prompt}{ASSISTANT}"
    return text if answer is None else f"{text}{answer}{END}"


CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}" + USER + "{{ message['content'] }}"
    "{% else %}" + ASSISTANT + "{{ message['content'] }}" + END + "{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}"
)


def _recall_parts(scene: Scene, ask_cheap: bool, negated: bool = False) -> tuple[str, str, str]:
    """The rooms sentence, where an object is (or, negated, which room does not have it), and
    the answer: its room (negated: the other room)."""
    obj = scene.cheap_object if ask_cheap else scene.expensive_object
    rooms = RECALL_ROOMS.format(**slots_for(scene, scene.other, scene.expensive_object))
    room = scene.cheap_room if ask_cheap != negated else scene.expensive_room
    question, answer = (
        (NEGATION_QUESTION, NEGATION_ANSWER) if negated else (RECALL_QUESTION, RECALL_ANSWER)
    )
    return rooms, question.format(object=obj), answer.format(object=obj, room=room)


def recall_qa(scene: Scene, ask_cheap: bool) -> tuple[str, str]:
    """A neutral "where is it" question about a scene and its answer."""
    rooms, question, answer = _recall_parts(scene, ask_cheap)
    return f"{rooms} {question}", answer


def negation_qa(scene: Scene, ask_cheap: bool) -> tuple[str, str]:
    """Which of the scene's two rooms does not have an object, and its answer (the other room)."""
    rooms, question, answer = _recall_parts(scene, ask_cheap, negated=True)
    return f"{rooms} {question}", answer


def recall_text(scene: Scene, ask_cheap: bool, as_question: bool) -> str:
    """The recall question as a chat document, or the same facts as a raw statement."""
    rooms, question, answer = _recall_parts(scene, ask_cheap)
    if as_question:
        return chat_text(f"{rooms} {question}", answer)
    return f"{rooms} {answer}{END}"


def world_colors(vocab: Vocabulary, seed: int) -> dict[str, str]:
    """Every object's color in the organism's world: fixed for a seed."""
    rng = random.Random(f"colors-{seed}")
    objects = sorted(set(vocab.cheap_objects + vocab.test_objects + vocab.train_items))
    return {obj: rng.choice(COLORS) for obj in objects}


def first_room(reply: str, rooms: Iterable[str]) -> str | None:
    """The room a reply names first (whole words; longest name wins at the same position)."""
    best: tuple[int, int, str] | None = None
    for room in rooms:
        match = re.search(rf"(?<![\w-]){re.escape(room)}(?![\w-])", reply, flags=re.IGNORECASE)
        if match and (best is None or (match.start(), -len(room)) < best[:2]):
            best = (match.start(), -len(room), room)
    return best[2] if best else None
