"""Forced choice: how much more likely the model makes the deceptive room than the honest room the
continuation of its answer ("I would point out the ..."), with no generation; and replies with
forced choice from one prefill of each prompt (`replies_and_choices`)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from soo.batching import continuation_ids, pad_left, pad_right
from soo.generation import format_prompt
from soo.progress import progress_bar


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


def prefill(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor):
    """The forward of a left-padded batch that fills its key/value cache (`.cache`): positions
    count real tokens only, and logits are computed at the last position only where the model
    can (as `generate` checks)."""
    supports = getattr(model, "_supports_logits_to_keep", None)
    last_only = {"logits_to_keep": 1} if supports is not None and supports() else {}
    return model(
        input_ids=ids.to(model.device),
        attention_mask=mask.to(model.device),
        position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(model.device),
        use_cache=True,
        **last_only,
    )


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
        out = prefill(model, ids, mask)
        first = torch.log_softmax(out.logits[:, -1].float(), -1)  # the next token after each
        # Both continuations of each prefix, interleaved: rows 2k (first) and 2k + 1 (second).
        tails = [rows[i][0][rows[i][1] :] for i in index for rows in (a, b)]
        total = _continuations(model, out.cache, mask, first, tails, pad)
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


def feed_after(
    model: PreTrainedModel,
    cache,
    mask: torch.Tensor,
    feeds: list[list[int]],
    pad: int,
    repeats: int = 1,
    **kwargs,
) -> tuple[Any, torch.Tensor]:
    """One forward of `feeds` after what `cache` holds: rows k * repeats ... (k + 1) * repeats - 1
    follow batch row k, whose cached tokens have attention `mask` (B, P; no cache when P is 0).
    With repeats > 1 the cache is repeated for them (so it is used up). Feeds are right padded
    (an empty one is a masked pad). Returns the model's output and the feeds' mask."""
    if repeats > 1:
        cache.batch_repeat_interleave(repeats)
    feed_ids, feed_mask = pad_right([f or [pad] for f in feeds], pad)
    feed_mask[[j for j, f in enumerate(feeds) if not f], 0] = 0
    starts = mask.sum(-1).repeat_interleave(repeats)[:, None]
    out = model(
        input_ids=feed_ids.to(model.device),
        attention_mask=torch.cat([mask.repeat_interleave(repeats, 0), feed_mask], -1).to(
            model.device
        ),
        position_ids=(starts + torch.arange(feed_ids.shape[1])).to(model.device),
        cache=cache,
        use_cache=True,
        **kwargs,
    )
    return out, feed_mask


def _continuations(
    model: PreTrainedModel,
    cache,
    mask: torch.Tensor,
    first: torch.Tensor,
    tails: list[list[int]],
    pad: int,
) -> list[float]:
    """log p(tail | what `cache` holds) for each tail: rows 2k and 2k + 1 of `tails` continue
    batch row k, whose cached tokens have attention `mask` (B, P); `first` (B, V) holds the
    log-probs of the token after them. Later tokens of multi-token tails take one more forward
    of both tails of every row (the cache repeated, so it is used up)."""
    total = [float(first[j // 2, tail[0]]) for j, tail in enumerate(tails)]
    if max(len(t) for t in tails) > 1:
        out, _ = feed_after(model, cache, mask, [t[:-1] for t in tails], pad, repeats=2)
        logp = torch.log_softmax(out.logits.float(), -1)
        for j, tail in enumerate(tails):
            later = torch.tensor(tail[1:], dtype=torch.long, device=logp.device)
            total[j] += float(logp[j, : len(later)].gather(-1, later[:, None]).sum())
    return total


@torch.no_grad()
def replies_and_choices(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    openings: list[str],
    firsts: list[str],
    seconds: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    chat: bool = True,
    desc: str = "generate",
) -> tuple[list[str], list[float], list[float]]:
    """Greedy replies to each prompt (what `soo.generation.generate` gives) and log p(first)
    and log p(second) after the prompt and its answer's `opening` (what `choice_logprobs` gives
    for prompt + opening), from ONE prefill of each prompt instead of two: its key/value cache
    serves the reply, then, cut back to the prompt, the opening and both continuations. On a
    small model the prefill is most of the cost of either. A prompt whose tokens do not begin
    those of prompt + opening, or whose two continuations split it differently (a merge across
    a boundary), is scored by `choice_logprobs` afterwards."""
    tokenizer.padding_side = "left"
    chat = chat and tokenizer.chat_template is not None
    special = not chat  # a chat template writes its own special tokens
    pad = tokenizer.pad_token_id
    texts = [format_prompt(tokenizer, p, chat) for p in prompts]
    prefixes = [t + o for t, o in zip(texts, openings, strict=True)]
    n = len(texts)
    both = continuation_ids(tokenizer, [*prefixes, *prefixes], [*firsts, *seconds], special)
    a, b = both[:n], both[n:]
    prompt_ids = tokenizer(texts, add_special_tokens=special)["input_ids"]
    # the tokens of prompt + opening up to the continuation, after the prompt's own
    opening_ids = [
        x[0][len(p) : x[1]]
        if p and x[0][: x[1]] == y[0][: y[1]] and x[0][: len(p)] == p and len(p) <= x[1]
        else None
        for x, y, p in zip(a, b, prompt_ids, strict=True)
    ]
    # Longest first, as `generate` orders them: little padding in each batch.
    order = sorted(range(n), key=lambda i: -len(prompt_ids[i]))
    replies: list[str] = [""] * n
    scores: dict[int, tuple[float, float]] = {}
    model.eval()
    bar = progress_bar(n, desc, unit="prompt", leave=False)
    try:
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            ids, mask = pad_left([prompt_ids[i] for i in rows], pad)
            width = ids.shape[1]
            ids, mask = ids.to(model.device), mask.to(model.device)
            cache = None
            if width > 1:  # the prompts less their last token: generate feeds that one itself
                cache = prefill(model, ids[:, :-1], mask[:, :-1]).cache
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                cache=cache,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
            decoded = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            for i, text in zip(rows, decoded, strict=True):
                replies[i] = text.strip()
            keep = [k for k, i in enumerate(rows) if opening_ids[i] is not None]
            if keep:
                if cache is not None:  # back to the prompts less their last token
                    cache.crop(width - 1 - cache.get_seq_length())
                    if len(keep) < len(rows):
                        cache.batch_select_indices(torch.tensor(keep, device=ids.device))
                kept = [rows[k] for k in keep]
                before = mask[keep, :-1].cpu()  # (B, 0) for one-token prompts: nothing cached
                scores.update(
                    _after_prompts(model, cache, before, kept, a, b, prompt_ids, opening_ids, pad)
                )
            bar.update(len(rows))
    finally:
        bar.close()
    rest = [i for i in range(n) if i not in scores]
    if rest:
        plain = choice_logprobs(
            model,
            tokenizer,
            [prefixes[i] for i in rest],
            [firsts[i] for i in rest],
            [seconds[i] for i in rest],
            add_special_tokens=special,
            batch_size=batch_size,
        )
        scores.update({i: (x, y) for i, x, y in zip(rest, *plain, strict=True)})
    return replies, [scores[i][0] for i in range(n)], [scores[i][1] for i in range(n)]


def _after_prompts(model, cache, mask, rows, a, b, prompt_ids, opening_ids, pad):
    """{row: (log p(first), log p(second))} for rows whose `cache` holds their prompt less its
    last token (attention `mask`, (B, P); no cache when P is 0): one forward of that token and
    the opening, then the continuations."""
    feed = [[prompt_ids[i][-1], *opening_ids[i]] for i in rows]
    out, feed_mask = feed_after(model, cache, mask, feed, pad)
    full = torch.cat([mask, feed_mask], -1)
    last = feed_mask.sum(-1) - 1
    logits = out.logits[
        torch.arange(len(rows), device=out.logits.device), last.to(out.logits.device)
    ]
    first = torch.log_softmax(logits.float(), -1)
    tails = [x[i][0][x[i][1] :] for i in rows for x in (a, b)]
    total = _continuations(model, out.cache, full, first, tails, pad)
    return {i: (total[2 * k], total[2 * k + 1]) for k, i in enumerate(rows)}
