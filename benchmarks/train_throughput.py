"""SOO training throughput and peak memory: this project's step vs the released code's loop.

Ours (soo.objective, what every Ray worker runs): one forward over the concatenated self+other
batch with dynamic padding, stopping after the SOO layer (o_proj at ~60% depth), MSE, LoRA only
up to that layer. Released (a faithful re-implementation of agencyenterprise/SOO-Honest-AI's
loop): two forwards (self, then other) each padded to 128 tokens, full logits, KL(other || self)
summed over every position and divided by the batch, batch 4, gradient accumulation 4, LoRA
r8/alpha32/dropout 0.2 on q_proj and v_proj of every layer; fp16 autocast with GradScaler on GPU.
Both use AdamW on the same base model, the same 52 training pairs, batch 4, on the same machine.

Memory over the first 8 steps of each loop: on CPU, torch's memory profiler timeline (every
allocation, by category); on GPU, torch.cuda.max_memory_allocated. Reported as the peak above the
model's weights (activations, temporaries, gradients, optimizer states, logits) and that plus the
weights.

    python benchmarks/train_throughput.py                      # the organism on CPU
    python benchmarks/train_throughput.py --mistral-7b-shape   # random Mistral-7B on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from soo.batching import encode, pad_right
from soo.config import TrainParams
from soo.data import PairRecord, read_jsonl
from soo.loss import legacy_logit_kl
from soo.models import load_model
from soo.objective import SooForward, add_lora
from soo.train import make_optimizer, train_step

ROOT = Path(__file__).resolve().parents[1]

Step = Callable[[list[PairRecord]], None]


def mistral_7b_shape(device: str) -> torch.nn.Module:
    """Mistral-7B-v0.2's architecture with random weights (nothing downloaded)."""
    from transformers import AutoModelForCausalLM, MistralConfig

    config = MistralConfig(  # Mistral-7B-Instruct-v0.2's config.json
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        rope_theta=1e6,
        sliding_window=None,
    )
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model.eval()


def ours(model, tokenizer, device: str) -> tuple[Step, torch.nn.Module, torch.optim.Optimizer]:
    params = TrainParams()  # the defaults: paper LoRA, layer 0.6, alignment full, lr 1e-4
    peft_model = add_lora(model, params, seed=0)
    peft_model.train()
    forward = SooForward(peft_model, params)
    optimizer, scheduler = make_optimizer(peft_model, params, total_steps=10**6)
    calls = [0]

    def step(pairs: list[PairRecord]) -> None:  # the trainer's own step (soo.train.train_step)
        calls[0] += 1
        train_step(
            forward,
            peft_model,
            tokenizer,
            pairs,
            [],
            params,
            device,
            calls[0],
            optimizer,
            scheduler,
            micro=len(pairs),
        )

    return step, peft_model, optimizer


def released(model, tokenizer, device: str) -> tuple[Step, torch.nn.Module, torch.optim.Optimizer]:
    config = LoraConfig(
        r=8,
        lora_alpha=32,
        lora_dropout=0.2,
        target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(0)
    peft_model = get_peft_model(model, config)
    peft_model.train()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], 5e-5)
    cuda = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    accum, calls = 4, [0]

    def encode128(texts: list[str]) -> dict[str, torch.Tensor]:
        ids, mask = pad_right(encode(tokenizer, texts), tokenizer.pad_token_id, pad_to=128)
        return {"input_ids": ids[:, :128].to(device), "attention_mask": mask[:, :128].to(device)}

    def step(pairs: list[PairRecord]) -> None:
        self_batch = encode128([p.self_prompt for p in pairs])
        other_batch = encode128([p.other_prompt for p in pairs])
        with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
            self_logits = peft_model(**self_batch).logits
            other_logits = peft_model(**other_batch).logits
            loss, _ = legacy_logit_kl(self_logits, other_logits)
        scaler.scale(loss / accum).backward()
        calls[0] += 1
        if calls[0] % accum == 0:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)

    return step, peft_model, optimizer


def batches(pairs: list[PairRecord], n: int, size: int = 4) -> list[list[PairRecord]]:
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0)).tolist()
    cycle = [pairs[i] for i in order] * (n * size // len(pairs) + 1)
    return [cycle[i * size : (i + 1) * size] for i in range(n)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def pairs_per_second(step: Step, work: list[list[PairRecord]], device: str) -> float:
    for batch in work[:3]:  # warm-up
        step(batch)
    sync(device)
    start = time.perf_counter()
    for batch in work:
        step(batch)
    sync(device)
    return sum(len(b) for b in work) / (time.perf_counter() - start)


def peak_memory(step: Step, model, work, device: str) -> dict[str, int]:
    """Peak bytes above the model's weights (activations, temporaries, gradients, optimizer
    states, logits), and that plus the weights (all of which stay resident)."""
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        for batch in work:
            step(batch)
        torch.cuda.synchronize()
        above = torch.cuda.max_memory_allocated() - weights
    else:  # torch's memory profiler: every CPU allocation, by category
        from torch.profiler import ProfilerActivity, profile

        with profile(
            activities=[ProfilerActivity.CPU],
            profile_memory=True,
            record_shapes=True,
            with_stack=True,
        ) as prof:
            for batch in work:
                step(batch)
        with tempfile.TemporaryDirectory() as folder:
            prof.export_memory_timeline(f"{folder}/timeline.json", device="cpu")
            _, sizes = json.loads(Path(f"{folder}/timeline.json").read_text())
        above = max(sum(row) - row[1] for row in sizes)  # row[1]: the parameters category
    return {"peak_bytes": weights + above, "peak_above_weights_bytes": above}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "organism"))
    parser.add_argument(
        "--mistral-7b-shape",
        action="store_true",
        help="random-weight Mistral-7B from its config (GPU); token ids from --model's tokenizer",
    )
    parser.add_argument("--pairs", default=str(ROOT / "data" / "scenarios" / "soo_pairs.jsonl"))
    parser.add_argument("--steps", type=int, default=60, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; median kept")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    base, tokenizer = load_model(args.model, device=device)
    if args.mistral_7b_shape:
        if device != "cuda":
            raise SystemExit("--mistral-7b-shape needs a GPU (about 15 GB of bf16 weights)")
        base = mistral_7b_shape(device)
    pairs = read_jsonl(args.pairs, PairRecord)
    work = batches(pairs, args.steps)
    loops = {"ours": ours, "released": released}
    built = {name: make(copy.deepcopy(base), tokenizer, device) for name, make in loops.items()}
    del base
    # Memory first: the first steps also allocate the optimizer states and gradients.
    memory = {
        name: peak_memory(step, model, work[:8], device) for name, (step, model, _) in built.items()
    }
    speed: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.rounds):
        for name, (step, _, _) in built.items():
            speed[name].append(pairs_per_second(step, work, device))
    rate = {name: statistics.median(values) for name, values in speed.items()}
    results = {
        "device": (
            torch.cuda.get_device_name() if device == "cuda" else f"cpu x{torch.get_num_threads()}"
        ),
        "model": "mistral-7b-shape (random bf16)" if args.mistral_7b_shape else args.model,
        "pairs_per_second": rate,
        "rounds": speed,
        "memory": memory,
        "speedup": rate["ours"] / rate["released"],
        "memory_ratio": memory["ours"]["peak_bytes"] / memory["released"]["peak_bytes"],
        "memory_ratio_above_weights": memory["ours"]["peak_above_weights_bytes"]
        / memory["released"]["peak_above_weights_bytes"],
    }
    mib = 2**20
    print(
        f"device {results['device']} | model {results['model']} | batch 4, {args.steps} steps x "
        f"{args.rounds} rounds"
    )
    for name in loops:
        m = memory[name]
        print(
            f"{name:9s} {rate[name]:8.1f} pairs/s | peak {m['peak_bytes'] / mib:9.2f} MiB | "
            f"above weights {m['peak_above_weights_bytes'] / mib:9.2f} MiB"
        )
    print(
        f"speed-up {results['speedup']:.2f}x (target >= 3) | peak memory ratio "
        f"{results['memory_ratio']:.3f} (target <= 0.5), above weights "
        f"{results['memory_ratio_above_weights']:.3f}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
