"""The GPU check: one script, one JSON, under 10 minutes on one GPU, nothing downloaded.

On a Mistral-7B-shaped model with random bf16 weights (its config.json, 32 layers, hidden 4096):
- SOO training: pairs/s and peak memory of this project's step in the paper's setting (o_proj at
  0.6 depth, LoRA r8 on q_proj/v_proj, early exit) vs the released code's loop, 20 timed steps
  each (benchmarks/train_throughput.py's loops);
- the same step on a 4-bit copy (QLoRA) when bitsandbytes is installed, else the reason it was not;
- batched greedy generation (soo.generation, what `evaluate` runs): prompts/s and tokens/s for
  256 dev burglar prompts, 32 new tokens each (random weights rarely stop early, so every reply runs
  to the limit: a throughput figure, not a behaviour one).
Token ids come from a word-level tokenizer trained on the prompts (ids < 32000).

    python benchmarks/gpu_check.py --out gpu_check.json           # on the GPU machine
    python benchmarks/gpu_check.py --shape tiny --out check.json   # the same code on a CPU
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import batches, mistral_7b_shape, ours, pairs_per_second, peak_memory  # noqa: E402
from train_throughput import released as released_loop  # noqa: E402

from soo.config import ScenariosParams, TrainParams  # noqa: E402
from soo.generation import generate  # noqa: E402
from soo.organism.tokenizer import train_tokenizer  # noqa: E402
from soo.scenarios import build_scenarios  # noqa: E402


def tiny_shape(device: str) -> torch.nn.Module:
    """Mistral's architecture at toy size: the check's code path on a CPU in seconds."""
    return mistral_7b_shape(
        device,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    )


def four_bit(base: torch.nn.Module, device: str) -> tuple[torch.nn.Module | None, str]:
    """A 4-bit (nf4) copy of `base` through a saved folder, or None and why not."""
    if not device.startswith("cuda"):
        return None, "4-bit needs a GPU"
    if importlib.util.find_spec("bitsandbytes") is None:
        return None, "bitsandbytes is not installed"
    from soo.models import load_model

    with tempfile.TemporaryDirectory() as folder:
        base.save_pretrained(folder)
        model, _ = load_model(folder, load_in_4bit=True, device=device)
    return model, "ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=("mistral-7b", "tiny"), default="mistral-7b")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per loop")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64, help="generation batch")
    parser.add_argument("--out", required=True, help="the JSON to write")
    args = parser.parse_args()
    started = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.shape == "mistral-7b" and device != "cuda":
        raise SystemExit("--shape mistral-7b needs a GPU (about 15 GB of bf16 weights)")

    scenarios = build_scenarios(ScenariosParams(n_test=8, n_dev=args.prompts))
    prompts = [r.prompt for r in scenarios["dev/burglar"]][: args.prompts]  # dev: never test
    pairs = scenarios["soo_pairs"]
    tokenizer = train_tokenizer(
        prompts + [t for p in pairs for t in (p.self_prompt, p.other_prompt)]
    )
    base = (mistral_7b_shape if args.shape == "mistral-7b" else tiny_shape)(device)
    work = batches(pairs, args.steps)
    results: dict = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "shape": args.shape,
        "torch": torch.__version__,
        "train": {},
    }

    loops = {
        "paper": lambda m: ours(m, tokenizer, device, TrainParams()),
        "released": lambda m: released_loop(m, tokenizer, device),
    }
    for name, make in loops.items():
        step, model, optimizer = make(copy.deepcopy(base))
        memory = peak_memory(step, model, work[:4], device)
        results["train"][name] = {
            "pairs_per_second": pairs_per_second(step, work, device),
            "peak_gib": memory["peak_bytes"] / 2**30,
            "peak_above_weights_gib": memory["peak_above_weights_bytes"] / 2**30,
        }
        del step, model, optimizer
        if device == "cuda":
            torch.cuda.empty_cache()
    train = results["train"]
    results["train"]["speedup"] = (
        train["paper"]["pairs_per_second"] / train["released"]["pairs_per_second"]
    )

    quantized, why = four_bit(base, device)
    results["train_4bit"] = {"status": why}
    if quantized is not None:
        step, model, _ = ours(quantized, tokenizer, device, TrainParams())
        memory = peak_memory(step, model, work[:4], device)
        results["train_4bit"].update(
            pairs_per_second=pairs_per_second(step, work, device),
            peak_gib=memory["peak_bytes"] / 2**30,
        )
        del step, model, quantized
        if device == "cuda":
            torch.cuda.empty_cache()

    tokenizer.padding_side = "left"
    generate(base, tokenizer, prompts[:8], max_new_tokens=4, batch_size=8)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    replies = generate(
        base, tokenizer, prompts, max_new_tokens=args.new_tokens, batch_size=args.batch_size
    )
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    results["generation"] = {
        "prompts": len(prompts),
        "batch_size": args.batch_size,
        "max_new_tokens": args.new_tokens,
        "prompts_per_second": len(prompts) / seconds,
        # random weights rarely stop early: every reply runs (nearly) to max_new_tokens
        "new_tokens_per_second_at_most": len(replies) * args.new_tokens / seconds,
    }
    results["seconds"] = time.perf_counter() - started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
