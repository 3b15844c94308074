"""Batched greedy generation: left padding, the chat template when asked, a progress bar."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def format_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, chat: bool) -> str:
    """The prompt as the model sees it: through its chat template, or raw."""
    if not chat:
        return prompt
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    max_new_tokens: int = 75,
    batch_size: int = 32,
    chat: bool = True,
    desc: str = "generate",
) -> list[str]:
    """Greedy replies (new text only) to each prompt, in order."""
    tokenizer.padding_side = "left"
    texts = [
        format_prompt(tokenizer, p, chat and tokenizer.chat_template is not None) for p in prompts
    ]
    replies: list[str] = []
    model.eval()
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", leave=False):
        batch = tokenizer(
            texts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(model.device)
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new = out[:, batch["input_ids"].shape[1] :]
        replies.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    return [r.strip() for r in replies]
