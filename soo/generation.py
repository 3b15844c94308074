"""Batched greedy generation: left padding, the chat template when asked, a progress bar."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from soo.progress import progress_bar


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
    chat = chat and tokenizer.chat_template is not None
    texts = [format_prompt(tokenizer, p, chat) for p in prompts]
    # Longest first, so each batch holds prompts of similar length (little padding) and a
    # batch that runs out of memory does so at once; replies go back in the callers' order.
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=not chat)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    replies: list[str] = [""] * len(texts)
    model.eval()
    bar = progress_bar(len(texts), desc, unit="prompt", leave=False)
    try:
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in rows],
                return_tensors="pt",
                padding=True,
                add_special_tokens=not chat,  # a chat template writes its own special tokens
            ).to(model.device)
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new = out[:, batch["input_ids"].shape[1] :]
            for i, text in zip(
                rows, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True
            ):
                replies[i] = text
            bar.update(len(rows))
    finally:
        bar.close()
    return [r.strip() for r in replies]
