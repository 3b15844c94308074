"""Tokenized, right-padded batches: self and other prompts of a batch go through ONE forward."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from soo.data import PairRecord


def pad_right(
    rows: Sequence[Sequence[int]], pad_id: int, pad_to: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (ids, mask), both (N, T), real tokens first. T is the longest row
    (dynamic padding) or ``pad_to`` when that is longer."""
    width = max(max(len(r) for r in rows), pad_to or 0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def pad_left(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (ids, mask), both (N, T), real tokens last (so every row ends at T-1)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


def encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    return tokenizer(list(texts), add_special_tokens=True)["input_ids"]


def collate_pairs(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PairRecord],
    neutral: Sequence[str] = (),
    pad_to: int | None = None,
) -> dict[str, torch.Tensor]:
    """One batch for one forward: rows [0, B) are the self prompts, [B, 2B) the matching other
    prompts, then any neutral prompts (capability term). Right padding keeps token i of a self
    prompt in the same column as token i of its other prompt."""
    rows = encode(tokenizer, [p.self_prompt for p in pairs])
    rows += encode(tokenizer, [p.other_prompt for p in pairs])
    rows += encode(tokenizer, neutral) if neutral else []
    ids, mask = pad_right(rows, tokenizer.pad_token_id, pad_to)
    return {"input_ids": ids, "attention_mask": mask}


def continuation_ids(
    tokenizer: PreTrainedTokenizerBase,
    prefixes: Sequence[str],
    texts: Sequence[str],
    special: bool,
) -> list[tuple[list[int], int]]:
    """For each prefix and text: the token ids of prefix + text, and where the continuation
    starts. Two batch calls, each distinct prefix tokenized once (forced choice passes every
    prompt twice, once a room)."""
    if not prefixes:
        return []
    fulls = tokenizer(
        [p + t for p, t in zip(prefixes, texts, strict=True)], add_special_tokens=special
    )["input_ids"]
    unique = list(dict.fromkeys(prefixes))
    heads = tokenizer(unique, add_special_tokens=special)["input_ids"]
    by_prefix = dict(zip(unique, heads, strict=True))
    out = []
    for full, head in zip(fulls, (by_prefix[p] for p in prefixes), strict=True):
        common = 0
        while common < min(len(full), len(head)) and full[common] == head[common]:
            common += 1
        out.append((full, min(common, len(full) - 1)))
    return out


def collate_answers(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[tuple[str, str]],
    neutral: Sequence[str] = (),
    add_special_tokens: bool = False,
) -> dict[str, torch.Tensor]:
    """The supervised baseline's batch: rows [0, B) are prompt + answer, `answer_mask` (B, T) is
    1 on the answer's tokens (what its loss trains on); then any neutral prompts, as in
    `collate_pairs`."""
    split = continuation_ids(
        tokenizer, [p for p, _ in examples], [a for _, a in examples], add_special_tokens
    )
    rows = [ids for ids, _ in split] + (encode(tokenizer, neutral) if neutral else [])
    ids, mask = pad_right(rows, tokenizer.pad_token_id)
    answer = torch.zeros((len(split), ids.shape[1]), dtype=torch.long)
    for row, (full, start) in enumerate(split):
        answer[row, start : len(full)] = 1
    return {"input_ids": ids, "attention_mask": mask, "answer_mask": answer}


LEGACY_LENGTH = 128  # the released code padded (and truncated) every prompt to this


def collate_legacy(
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PairRecord]
) -> dict[str, torch.Tensor]:
    """The released code's batch: every prompt padded to 128 tokens with EOS, on the tokenizer's
    own padding side (left for Mistral), rows [0, B) self and [B, 2B) other."""
    texts = [p.self_prompt for p in pairs] + [p.other_prompt for p in pairs]
    rows = [r[:LEGACY_LENGTH] for r in encode(tokenizer, texts)]
    ids, mask = pad_right(rows, tokenizer.eos_token_id, pad_to=LEGACY_LENGTH)
    if tokenizer.padding_side == "left":  # the same rows with the padding moved in front
        shifts = (LEGACY_LENGTH - mask.sum(1)).tolist()
        ids = torch.stack([row.roll(k) for row, k in zip(ids, shifts, strict=True)])
        mask = torch.stack([row.roll(k) for row, k in zip(mask, shifts, strict=True)])
    return {"input_ids": ids, "attention_mask": mask}


def unequal_pairs(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PairRecord]) -> list[str]:
    """Ids of pairs whose self and other prompts differ in token length (`full` needs equal)."""
    lengths = zip(
        encode(tokenizer, [p.self_prompt for p in pairs]),
        encode(tokenizer, [p.other_prompt for p in pairs]),
        strict=True,
    )
    return [p.id for p, (s, o) in zip(pairs, lengths, strict=True) if len(s) != len(o)]


def mismatch_pairs(
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PairRecord], seed: int, alignment: str
) -> list[PairRecord]:
    """The shuffled-pair control: each self prompt with the other prompt of a different pair.

    Pairs are grouped so each stays trainable (alignment `full`: the same self and other token
    lengths; otherwise one group), shuffled within their group by `seed` and each given the other
    prompt of the next one in the shuffled order, so no pair keeps its own. Raises ValueError
    when a group holds a single pair."""
    groups: dict[tuple[int, int], list[int]] = {}
    lengths = zip(
        encode(tokenizer, [p.self_prompt for p in pairs]),
        encode(tokenizer, [p.other_prompt for p in pairs]),
        strict=True,
    )
    for i, (s, o) in enumerate(lengths):
        groups.setdefault((len(s), len(o)) if alignment == "full" else (0, 0), []).append(i)
    rng = random.Random(seed)
    donor: dict[int, int] = {}
    for key in sorted(groups):
        members = groups[key]
        if len(members) < 2:
            raise ValueError(
                f"pair {pairs[members[0]].id} has no other pair of its token length "
                f"{key[0]}/{key[1]} to swap with: add pairs, or use alignment 'last' or 'mean'"
            )
        rng.shuffle(members)
        donor.update(zip(members, members[1:] + members[:1], strict=True))
    return [
        p.model_copy(
            update={
                "id": f"{p.id}~{pairs[donor[i]].id}",
                "other_prompt": pairs[donor[i]].other_prompt,
            }
        )
        for i, p in enumerate(pairs)
    ]
