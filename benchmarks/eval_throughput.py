"""Evaluation throughput: batched greedy generation (soo.generation, what the evaluate stage runs)
vs a one-prompt-at-a-time loop like the released notebook's, on the same model and prompts.

Both: greedy, max_new_tokens 75, stop at the end-of-turn token, the model's chat template. The
one-at-a-time loop tokenizes one prompt, calls `model.generate` and decodes, prompt after prompt.
The replies of the two are compared too (they should be identical).

How close the batched run is to the machine's arithmetic limit: its FLOPs (2 x the parameters of
every linear layer, LM head included, per token processed, plus attention's 4 x layers x hidden x
context per token; prompt tokens once, each reply token once) over the measured FLOP/s of a large
fp32 matmul on the same threads.

    python benchmarks/eval_throughput.py [--model models/organism] [--n 200] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from soo.data import ScenarioRecord, read_jsonl
from soo.generation import format_prompt, generate
from soo.models import load_model

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def one_at_a_time(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    replies = []
    for prompt in prompts:
        text = format_prompt(tokenizer, prompt, tokenizer.chat_template is not None)
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new = out[0, inputs["input_ids"].shape[1] :]
        replies.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return replies


def matmul_flops_per_second(size: int = 1024, repeats: int = 20) -> float:
    """The machine's arithmetic limit as this benchmark counts it: a large fp32 matmul."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def run_flops(
    model, tokenizer, prompts: list[str], replies: list[str], max_new_tokens: int = 10**9
) -> float:
    """Estimated FLOPs of generating `replies` to `prompts` (see the module's docstring)."""
    config = model.config
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    chat = tokenizer.chat_template is not None
    texts = [format_prompt(tokenizer, p, chat) for p in prompts]
    prompt_lens = [len(x) for x in tokenizer(texts, add_special_tokens=not chat)["input_ids"]]
    reply_lens = [  # the reply's tokens and its end token, unless it ran to the limit
        min(len(x) + 1, max_new_tokens)
        for x in tokenizer(replies, add_special_tokens=False)["input_ids"]
    ]
    flops = 0.0
    for p, r in zip(prompt_lens, reply_lens, strict=True):
        tokens, mean_context = p + r, (p + r) / 2
        attention = 4 * config.num_hidden_layers * config.hidden_size * mean_context
        flops += tokens * (2 * linear + attention)
    return flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "organism"))
    # dev prompts: a speed figure needs no test record (and benchmarks/dvc.yaml depends on these)
    parser.add_argument(
        "--scenarios", default=str(ROOT / "data" / "scenarios" / "dev" / "burglar.jsonl")
    )
    parser.add_argument("--n", type=int, default=256, help="prompts")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=75)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    model, tokenizer = load_model(args.model)
    prompts = [r.prompt for r in read_jsonl(args.scenarios, ScenarioRecord)[: args.n]]
    generate(model, tokenizer, prompts[:8], max_new_tokens=8, batch_size=8)  # warm-up
    start = time.perf_counter()
    batched = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        desc="batched",
    )
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    single = one_at_a_time(model, tokenizer, prompts, args.max_new_tokens)
    single_s = time.perf_counter() - start
    same = sum(a == b for a, b in zip(batched, single, strict=True))
    flops = run_flops(model, tokenizer, prompts, batched, args.max_new_tokens)
    limit = matmul_flops_per_second()
    results = {
        "device": str(model.device),
        "threads": torch.get_num_threads(),
        "model": args.model,
        "prompts": len(prompts),
        "batch_size": args.batch_size,
        "batched_scenarios_per_second": len(prompts) / batched_s,
        "one_at_a_time_scenarios_per_second": len(prompts) / single_s,
        "speedup": single_s / batched_s,
        "identical_replies": same,
        "batched_flops_per_second": flops / batched_s,
        "matmul_flops_per_second": limit,
        "batched_share_of_matmul_limit": flops / batched_s / limit,
    }
    print(
        f"{len(prompts)} prompts on {results['device']} ({results['threads']} threads): batched "
        f"{results['batched_scenarios_per_second']:.1f}/s, one at a time "
        f"{results['one_at_a_time_scenarios_per_second']:.1f}/s, speed-up "
        f"{results['speedup']:.1f}x; identical replies {same}/{len(prompts)}; batched "
        f"{flops / batched_s / 1e9:.2f} GFLOP/s = {results['batched_share_of_matmul_limit']:.1%} "
        f"of a matmul's {limit / 1e9:.1f} GFLOP/s"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
