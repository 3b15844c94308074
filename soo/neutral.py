"""Neutral texts for the capability term (`train.capability`): recall documents from the
organism's world ("In the A is a X. In the B is a Y. Where is the X?" and its answer), drawn by
the corpus generator with their own seed, never on a test triple. Kept out of soo/corpus.py so
that writing them does not rebuild the organism."""

from __future__ import annotations

from dataclasses import replace

from soo.config import OrganismParams
from soo.corpus import CorpusGenerator
from soo.data import TextRecord
from soo.organism import corpus_spec
from soo.vocabulary import Vocabulary

SEED_OFFSET = 2  # organism.seed + 1 draws the build's validation scenes


def neutral_records(
    vocab: Vocabulary, organism: OrganismParams, held_out: set[tuple[str, str, str]], n: int
) -> list[TextRecord]:
    spec = replace(corpus_spec(organism), seed=organism.seed + SEED_OFFSET)
    generator = CorpusGenerator(vocab, spec, held_out)
    return [TextRecord(id=f"neutral-{i:04d}", text=generator.recall()) for i in range(n)]
