"""Forced choice: how much more likely the model makes the deceptive room than the honest room the
continuation of its answer ("I would point out the ..."), with no generation."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from soo.batching import continuation_ids, pad_right


@torch.no_grad()
def continuation_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prefixes: list[str],
    continuations: list[str],
    *,
    add_special_tokens: bool = False,
    batch_size: int = 64,
) -> list[float]:
    """log p(continuation | prefix), summed over the continuation's tokens, for each pair."""
    rows = [
        continuation_ids(tokenizer, p, c, add_special_tokens)
        for p, c in zip(prefixes, continuations, strict=True)
    ]
    out: list[float] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        ids, mask = pad_right([r[0] for r in chunk], tokenizer.pad_token_id)
        ids, mask = ids.to(model.device), mask.to(model.device)
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        token_logp = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]  # (B, T-1): token t+1
        for i, (full, begin) in enumerate(chunk):
            out.append(float(token_logp[i, begin - 1 : len(full) - 1].sum()))
    return out
