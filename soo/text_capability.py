"""Capability of a pretrained model on real English that no stage trains on: next-token accuracy
(top-1) and perplexity over passages of the Python documentation's topics (`pydoc_data.topics`,
shipped with every Python: about 65,000 words of technical prose), and the same passages as the
texts where an adapter's KL to its base is measured (`evaluate.capability: text`)."""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from soo.batching import pad_right
from soo.config import EvaluateParams


def pydoc_passages(n: int, words: int = 48) -> list[str]:
    """`n` passages of `words` words, spread evenly over the documentation's topics (sorted by
    name, so the same on every machine with the same Python)."""
    from pydoc_data.topics import topics

    tokens = " ".join(topics[key] for key in sorted(topics)).split()
    passages = [" ".join(tokens[i : i + words]) for i in range(0, len(tokens) - words, words)]
    stride = max(1, len(passages) // n)
    return passages[::stride][:n]


@torch.no_grad()
def text_capability(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    batch_size: int = 16,
) -> dict[str, Any]:
    """Top-1 next-token accuracy and perplexity over every predicted token of `texts`."""
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    nll, correct, count = 0.0, 0, 0
    for start in range(0, len(texts), batch_size):
        chunk = tokenizer(texts[start : start + batch_size], add_special_tokens=False)["input_ids"]
        ids, mask = pad_right(chunk, pad)
        ids, mask = ids.to(model.device), mask.to(model.device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        target, real = ids[:, 1:], mask[:, 1:].bool()
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        nll += losses[real].sum().item()
        correct += (logits.argmax(-1) == target)[real].sum().item()
        count += int(real.sum().item())
    if not count:
        raise ValueError("text capability: the texts hold no token to predict")
    return {
        "accuracy": round(correct / count, 6),
        "perplexity": round(math.exp(nll / count), 4),
        "tokens": count,
    }


def text_measure(evaluate: EvaluateParams):
    """The capability measure of `soo.evaluate` for pretrained models: n_capability passages."""
    texts = pydoc_passages(evaluate.n_capability)

    def measure(model, tokenizer, records):
        return text_capability(model, tokenizer, texts, evaluate.batch_size), texts

    return measure
