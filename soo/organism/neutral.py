"""Neutral texts for the capability term (`train.capability`): recall documents from the
organism's world ("In the A is a X. In the B is a Y. Where is the X?" and its answer), drawn by
the corpus generator with their own seed, never on a test triple. Kept out of the corpus module
so that writing them does not rebuild the organism."""

from __future__ import annotations

from soo.config import OrganismParams
from soo.data import TextRecord
from soo.organism.corpus import CorpusGenerator
from soo.vocabulary import Vocabulary


def neutral_records(
    vocab: Vocabulary, organism: OrganismParams, held_out: set[tuple[str, ...]], n: int
) -> list[TextRecord]:
    generator = CorpusGenerator(vocab, organism, held_out, purpose="neutral")
    return [TextRecord(id=f"neutral-{i:04d}", text=generator.recall()) for i in range(n)]
