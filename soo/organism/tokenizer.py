"""The organism's tokenizer: word level, trained on its corpus, with its chat template."""

from __future__ import annotations

import re

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from soo.organism.world import CHAT_TEMPLATE, END, SPECIAL_TOKENS


def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (words and punctuation) trained on the corpus, with a chat template.

    Word-level tokens keep SOO pairs equal in length ("Bob has" / "You have").
    """
    core = Tokenizer(models.WordLevel(unk_token="<|unk|>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()]
    )
    core.decoder = decoders.Metaspace()
    # Special tokens are cut out before pre-tokenization when encoding, so cut them out when
    # training too: otherwise the word after one ("I" after the assistant token) is learned
    # without its word-start marker and encodes as unknown.
    plain = re.compile("|".join(re.escape(tok) for tok in SPECIAL_TOKENS))
    cleaned = (plain.sub(" ", text) for text in texts)
    core.train_from_iterator(
        cleaned, trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS))
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        eos_token=END,
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
