"""Forced choice: how much more likely the model makes the deceptive room than the honest room the
continuation of its answer ("I would point out the ..."), with no generation."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from soo.batching import continuation_ids, pad_left, pad_right


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
    rows = continuation_ids(tokenizer, prefixes, continuations, add_special_tokens)
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


@torch.no_grad()
def choice_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prefixes: list[str],
    firsts: list[str],
    seconds: list[str],
    *,
    add_special_tokens: bool = False,
    batch_size: int = 64,
) -> tuple[list[float], list[float]]:
    """log p(first | prefix) and log p(second | prefix) for each prefix: the sums
    `continuation_logprobs` gives, with one forward of each prefix shared by its two
    continuations (its key/value cache, then one short forward of both continuations' later
    tokens), so forced choice costs about one forward a prompt instead of two. A prefix whose
    tokens differ between its two continuations (a merge across the boundary) is scored the
    plain way."""
    pad = tokenizer.pad_token_id
    both = continuation_ids(
        tokenizer, [*prefixes, *prefixes], [*firsts, *seconds], add_special_tokens
    )
    a, b = both[: len(prefixes)], both[len(prefixes) :]
    shared = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x[0][: x[1]] == y[0][: y[1]]]
    scores: dict[tuple[int, int], float] = {}
    for start in range(0, len(shared), batch_size):
        index = shared[start : start + batch_size]
        ids, mask = pad_left([a[i][0][: a[i][1]] for i in index], pad)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(
            input_ids=ids.to(model.device),
            attention_mask=mask.to(model.device),
            position_ids=positions.to(model.device),
            use_cache=True,
        )
        first = torch.log_softmax(out.logits[:, -1].float(), -1)  # the next token after each
        # Both continuations of each prefix, interleaved: rows 2k (first) and 2k + 1 (second).
        tails = [rows[i][0][rows[i][1] :] for i in index for rows in (a, b)]
        total = [float(first[j // 2, tail[0]]) for j, tail in enumerate(tails)]
        if max(len(t) for t in tails) > 1:  # later tokens of multi-token continuations
            cache = out.cache
            cache.batch_repeat_interleave(2)
            tail_ids, tail_mask = pad_right([t[:-1] or [pad] for t in tails], pad)
            tail_mask[[j for j, t in enumerate(tails) if len(t) == 1], 0] = 0
            starts = mask.sum(-1).repeat_interleave(2)[:, None]
            logits = model(
                input_ids=tail_ids.to(model.device),
                attention_mask=torch.cat([mask.repeat_interleave(2, 0), tail_mask], -1).to(
                    model.device
                ),
                position_ids=(starts + torch.arange(tail_ids.shape[1])).to(model.device),
                cache=cache,
            ).logits
            logp = torch.log_softmax(logits.float(), -1)
            for j, tail in enumerate(tails):
                later = torch.tensor(tail[1:], dtype=torch.long, device=logp.device)
                total[j] += float(logp[j, : len(later)].gather(-1, later[:, None]).sum())
        for k, i in enumerate(index):
            scores[0, i], scores[1, i] = total[2 * k], total[2 * k + 1]
    rest = sorted(set(range(len(prefixes))) - set(shared))
    if rest:
        plain = continuation_logprobs(
            model,
            tokenizer,
            [prefixes[i] for i in rest] * 2,
            [firsts[i] for i in rest] + [seconds[i] for i in rest],
            add_special_tokens=add_special_tokens,
            batch_size=batch_size,
        )
        for k, i in enumerate(rest):
            scores[0, i], scores[1, i] = plain[k], plain[len(rest) + k]
    n = len(prefixes)
    return [scores[0, i] for i in range(n)], [scores[1, i] for i in range(n)]
