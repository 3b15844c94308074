"""Tiny models built in-process for tests: nothing is downloaded."""

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from soo.data import PairRecord, write_jsonl
from soo.scenarios import pair_records
from soo.vocabulary import load_vocabulary


def tiny_llama(seed: int = 0, vocab_size: int = 50, layers: int = 4) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=160,
    )
    return LlamaForCausalLM(config).eval()


def training_pairs(n: int = 8) -> list[PairRecord]:
    """The first n of the paper's training pairs."""
    items = load_vocabulary("reference").train_items[:n]
    return pair_records("soo_pairs", items, "Bob")


def save_tiny_model(folder: Path, texts: list[str], seed: int = 0) -> Path:
    """A 4-layer Llama and a word-level tokenizer covering `texts`, saved as a model folder."""
    words = sorted({w for t in texts for w in t.replace(".", " .").split()})
    vocab = {"<unk>": 0, "<pad>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="</s>"
    )
    tiny_llama(seed, vocab_size=len(vocab)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_setup(tmp_path: Path, n_pairs: int = 8) -> tuple[Path, Path]:
    """(model folder, pairs JSONL) for training tests."""
    pairs = training_pairs(n_pairs)
    texts = [t for p in pairs for t in (p.self_prompt, p.other_prompt)]
    model = save_tiny_model(tmp_path / "model", texts)
    return model, write_jsonl(tmp_path / "soo_pairs.jsonl", pairs)


def micro_steps(peft_model, tokenizer, batch, neutral, train, steps: int, lr: float) -> list[dict]:
    """`steps` optimizer steps of the worker's micro-step on one batch, in process: the
    diagnostics of each."""
    from soo.objective import SooForward
    from soo.train import micro_step

    forward = SooForward(peft_model, train)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
    history = []
    try:
        for _ in range(steps):
            optimizer.zero_grad()
            _, diagnostics = micro_step(
                forward, peft_model, tokenizer, batch, neutral, train, "cpu", weight=1.0, sync=True
            )
            optimizer.step()
            history.append(diagnostics)
    finally:
        forward.close()
    return history


def perturb_lora(peft_model, std: float) -> None:
    """Give LoRA a real update (B starts at zero, so a fresh adapter is the identity)."""
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, std)
