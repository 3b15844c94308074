"""Evaluation throughput: batched greedy generation (soo.generation, what the evaluate stage runs)
vs a one-prompt-at-a-time loop like the released notebook's, on the same model and prompts.

Both: greedy, max_new_tokens 75, stop at the end-of-turn token, the model's chat template. The
one-at-a-time loop tokenizes one prompt, calls `model.generate` and decodes, prompt after prompt.
The replies of the two are compared too (they should be identical).

    python benchmarks/eval_throughput.py [--model models/organism] [--n 256] [--batch-size 64]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "organism"))
    parser.add_argument(
        "--scenarios", default=str(ROOT / "data" / "scenarios" / "test" / "burglar.jsonl")
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
    }
    print(
        f"{len(prompts)} prompts on {results['device']} ({results['threads']} threads): batched "
        f"{results['batched_scenarios_per_second']:.1f}/s, one at a time "
        f"{results['one_at_a_time_scenarios_per_second']:.1f}/s, speed-up "
        f"{results['speedup']:.1f}x (target >= 10); identical replies {same}/{len(prompts)}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
