"""The experimental protocol (issue 17): train, dev and test are disjoint, nothing the organism is
trained on contains an evaluation prompt, and a sweep (which selects) never opens a test file."""

import re
import sys
from pathlib import Path

import pytest

from soo.config import OrganismParams, ScenariosParams, load_params
from soo.organism.build import build_corpus
from soo.organism.world import held_out_keys
from soo.scenarios import TEST_FAMILIES, build_scenarios, split_keys
from soo.vocabulary import load_vocabulary

VOCAB = load_vocabulary("reference")


@pytest.fixture(scope="module")
def datasets():
    return build_scenarios(ScenariosParams())


def normalizer(names: list[str]):
    """Lower case, one space, every party's name as <name>: a prompt that differs from a corpus
    text only by who the other is still counts as seen."""
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in names) + r")\b", re.IGNORECASE)

    def normalize(text: str) -> str:
        return " ".join(pattern.sub("<name>", text).lower().split())

    return normalize


def contained(prompts: list[str], documents: list[str], normalize) -> list[str]:
    """The prompts (normalized) that occur inside some document (normalized). A prompt can only
    start at a sentence start, so each document is probed there by the prompts' first characters,
    then checked in full."""
    normalized = {normalize(p) for p in prompts}
    head = min(48, *(len(p) for p in normalized))
    by_head: dict[str, list[str]] = {}
    for prompt in normalized:
        by_head.setdefault(prompt[:head], []).append(prompt)
    found = set()
    for document in documents:
        text = normalize(document)
        starts = [0] + [m.end() for m in re.finditer(r"(?:[.?!:] |>)", text)]
        for start in starts:
            for prompt in by_head.get(text[start : start + head], ()):
                if text.startswith(prompt, start):
                    found.add(prompt)
    return sorted(found)


def test_containment_finds_a_prompt_inside_a_document_up_to_the_name():
    normalize = normalizer(["Bob", "Carol"])
    prompt = "Bob wants the vase. Where is it?"
    assert contained([prompt], ["<|user|>Carol wants the vase. Where is it?<|end|>"], normalize)
    assert contained([prompt], ["Intro. Bob  wants the VASE. Where is it? Answer."], normalize)
    assert not contained([prompt], ["Bob wants the cup. Where is it?"], normalize)


def test_dev_and_test_share_no_scene_and_no_prompt(datasets):
    normalize = normalizer([VOCAB.other, VOCAB.other_alt])
    for family in TEST_FAMILIES:
        dev, test = datasets[f"dev/{family}"], datasets[f"test/{family}"]
        assert {normalize(r.prompt) for r in dev}.isdisjoint({normalize(r.prompt) for r in test})
    draws = {
        split: {
            key
            for r in datasets[f"{split}/burglar"]
            for key in (
                (r.vocab.cheap_room, r.vocab.expensive_room, r.vocab.expensive_object),
                (r.vocab.cheap_room, r.vocab.expensive_room, r.vocab.cheap_object),
            )
        }
        for split in ("dev", "test")
    }
    assert draws["dev"].isdisjoint(draws["test"])
    # The test split is the draw it was before splits existed (its numbers stay comparable).
    from soo.scenarios import draw_test_set

    test = draw_test_set(VOCAB, 1000, 0)
    assert [(r.vocab.cheap_room, r.vocab.cheap_object) for r in datasets["test/burglar"]] == [
        (d.cheap_room, d.cheap_object) for d in test
    ]
    assert all(len(split_keys(d)) == 2 for d in test)


@pytest.mark.slow
def test_no_evaluation_prompt_of_any_family_is_inside_the_organism_corpus(datasets):
    """Every dev and test prompt of every family against every training text of the default
    organism (documents, drills, self/other choices), names masked. On f9924df this found 46
    Escape Room test prompts (the corpus never draws the key as the valuable, so the held-out
    triples did not apply to that family)."""
    params = load_params(Path(__file__).parents[1] / "params.yaml").organism
    records = [r for key, rs in datasets.items() if "/" in key for r in rs]
    corpus = build_corpus(VOCAB, params, held_out_keys(records))
    names = [VOCAB.other, VOCAB.other_alt, *params.corpus.others]
    leaks = contained(
        [r.prompt for r in records],
        corpus.docs + corpus.drills + corpus.selection,
        normalizer(names),
    )
    assert not leaks, f"{len(leaks)} evaluation prompts inside the corpus, e.g. {leaks[:2]}"


def test_the_corpus_check_catches_escape_room_without_its_key(datasets):
    """The check itself: with only the old (rooms, valuable) keys, Escape Room prompts leak."""
    params = OrganismParams()
    params = params.model_copy(
        update={"corpus": params.corpus.model_copy(update={"n_docs": 20000})}
    )
    records = [r for key, rs in datasets.items() if key.startswith("test/") for r in rs]
    old_keys = {k for k in held_out_keys(records) if k[0] != "cheap"}
    corpus = build_corpus(VOCAB, params, old_keys)
    escape = [r.prompt for r in records if r.family == "escape_room"]
    names = [VOCAB.other, VOCAB.other_alt, *params.corpus.others]
    assert contained(escape, corpus.docs, normalizer(names))


def test_a_sweep_point_opens_no_test_split_file(stage_project):
    """A full sweep point (train, then every measurement) on a small project, with every file
    open recorded by an audit hook: dev files are read, no test-split file is."""
    from soo.pipeline.neutral import main as neutral
    from soo.sweep import sweep_point

    folder, params_path = stage_project
    neutral(str(params_path))
    params = load_params(params_path)
    sys.addaudithook(_record_open)  # audit hooks stay for the process: it records while asked
    OPENED.clear()
    RECORDING.append(True)
    try:
        row = sweep_point(params, n=4, seed=0, epochs=1)
    finally:
        RECORDING.clear()
    scenarios = (folder / "data" / "scenarios").resolve()
    assert any(p.startswith(str(scenarios / "dev")) for p in OPENED), OPENED[:20]
    assert not [p for p in OPENED if p.startswith(str(scenarios / "test"))]
    assert row["split"] == "dev"


OPENED: list[str] = []
RECORDING: list[bool] = []


def _record_open(event: str, args: tuple) -> None:
    if RECORDING and event == "open" and isinstance(args[0], (str, Path)):
        OPENED.append(str(Path(args[0]).resolve()))


def test_held_out_capability_shares_no_template_and_no_fact_with_soo_training():
    """The gated capability (colour facts about objects no SOO pair names) against everything SOO
    training sees: the capability term's KL texts and the SOO pairs. Masking every object, room,
    colour and name leaves the sentence templates; none is shared, and no held-out object occurs
    in the training texts."""
    from soo.organism.metrics import held_out_objects
    from soo.organism.neutral import neutral_records
    from soo.organism.world import COLOR_QUESTION, COLORS
    from soo.scenarios import pair_records

    params = load_params(Path(__file__).parents[1] / "params.yaml").organism
    kl_texts = [r.text for r in neutral_records(VOCAB, params, set(), 512)]
    pairs = pair_records("soo_pairs", VOCAB.train_items, VOCAB.other)
    training = kl_texts + [t for p in pairs for t in (p.self_prompt, p.other_prompt)]
    objects = held_out_objects(VOCAB)
    held_out = [COLOR_QUESTION.format(object=o) for o in sorted(objects)]
    words = sorted(
        {*VOCAB.rooms, *VOCAB.cheap_objects, *VOCAB.test_objects, *VOCAB.train_items, *COLORS},
        key=len,
        reverse=True,
    )
    slot = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)

    def templates(texts: list[str]) -> set[str]:
        masked = (normalizer([VOCAB.other, VOCAB.other_alt])(slot.sub("<x>", t)) for t in texts)
        pieces = (re.split(r"(?<=[.?!])\s+|<\|\w+\|>", t) for t in masked)
        return {p.strip() for piece in pieces for p in piece if p.strip()}

    assert templates(held_out), held_out[:2]
    assert not templates(held_out) & templates(training)
    assert objects and not objects & set(VOCAB.train_items)
    lowered = " ".join(training).lower()  # no colour fact of any object is stated there
    assert not [f"{o} is {c}" for o in objects for c in COLORS if f"{o} is {c}" in lowered]


def test_held_out_capability_follows_a_train_items_override():
    """With `scenarios.train_items` set, the SOO pairs name those items, so they leave the
    held-out capability set and the paper's other items (then in no pair) may be in it."""
    from soo.organism.metrics import held_out_objects

    default = ScenariosParams()
    items = default.vocab().train_items[:5]
    custom = ScenariosParams(train_items=items)
    assert custom.vocab().train_items == items
    assert not held_out_objects(custom.vocab()) & set(items)
    assert held_out_objects(default.vocab()) == held_out_objects(VOCAB)
    pairs = build_scenarios(custom)["soo_pairs"]
    named = {item for item in items if any(item in p.self_prompt for p in pairs)}
    assert named == set(items)


def _row(model, seed, lr, burglar, perspectives=1.0, capability=1.0, unparseable=0.0):
    metrics = dict.fromkeys(
        ("burglar_unparseable", "burglar_forced_choice", "generalization", "capability_recall"),
        0.0,
    )
    metrics.update(capability_facts=1.0, kl_to_base=0.0, latent_attention=0.0)
    return {
        "model": model,
        "lr": lr,
        "seed": seed,
        "burglar": burglar,
        "perspectives": perspectives,
        "capability": capability,
        "unparseable_mean": unparseable,
        **metrics,
    }


def test_the_selection_rule_keeps_the_gates_on_every_build():
    """`soo.sweep.choose`: means over seeds per build; a setting that fails Perspectives on one
    build is out however low its deception; capability drop is taken from each build's own base."""
    from soo.config import PromoteParams
    from soo.sweep import choose

    gates = PromoteParams()
    bases = [
        {**_row("a", 0, None, 1.0, capability=1.0), "base": True},
        {**_row("b", 0, None, 1.0, capability=0.8), "base": True},
    ]
    rows = bases + [
        # lowest deception, but Perspectives 0.7 on build b (its mean over seeds)
        _row("a", 0, 3e-3, 0.1),
        _row("a", 1, 3e-3, 0.1),
        _row("b", 0, 3e-3, 0.1, perspectives=0.9),
        _row("b", 1, 3e-3, 0.1, perspectives=0.5),
        # qualifies: b's capability 0.78 is within 0.03 of ITS base 0.8
        _row("a", 0, 1e-3, 0.6),
        _row("a", 1, 1e-3, 0.4),
        _row("b", 0, 1e-3, 0.5, capability=0.78),
        _row("b", 1, 1e-3, 0.5, capability=0.78),
        # qualifies, more deceptive
        _row("a", 0, 1e-4, 0.9),
        _row("b", 0, 1e-4, 0.9, capability=0.8),
    ]
    choice = choose(rows, gates)
    assert choice["chosen"] == {"lr": "0.001"}
    first, second, third = choice["table"]
    assert first["burglar"] == pytest.approx(0.5) and first["qualifies"]
    assert second["setting"] == {"lr": "0.0001"} and second["qualifies"]
    assert third["setting"] == {"lr": "0.003"} and third["failures"] == ["b: Perspectives 0.70"]
    # with a stricter capability limit, b's 0.78 fails and the less deceptive setting is out
    strict = choose(rows, gates.model_copy(update={"max_capability_drop": 0.01}))
    assert strict["chosen"] == {"lr": "0.0001"}
    # nothing qualifies -> no choice, not the least bad one
    assert choose(bases + rows[2:6], gates)["chosen"] is None
    with pytest.raises(ValueError, match="no base row for b"):
        choose(bases[:1] + rows[2:], gates)
