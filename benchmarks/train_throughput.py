"""SOO training throughput and peak memory: this project's step, in the shipped setting
(params.yaml `train`) and in the paper's (TrainParams' defaults), vs the released code's loop.

Ours (soo.train.train_step, what every Ray worker runs): one forward over the concatenated
self+other batch with dynamic padding; in the paper's setting it stops after the SOO layer (o_proj
at ~60% depth), MSE, LoRA only up to that layer; the shipped setting is params.yaml's `train`
(today o_proj at layer 3, LoRA r 32 on q_proj, and the capability KL, which needs a full forward
over neutral rows plus a base forward). Released (a faithful
re-implementation of agencyenterprise/SOO-Honest-AI's loop): two forwards (self, then other) each
padded to 128 tokens with EOS on the tokenizer's side, full logits, KL(other || self) summed over
every position and divided by the batch, batch 4, gradient accumulation 4 with the losses added
up, LoRA r8/alpha32/dropout 0.2 on q_proj and v_proj of every layer; fp16 autocast with
GradScaler on GPU. All use AdamW on the same base model, the same 52 training pairs, batch 4, on
the same machine.

Memory over the first 8 steps of each loop: on CPU, torch's memory profiler timeline (every
allocation, by category); on GPU, torch.cuda.max_memory_allocated. Reported as the peak above the
model's weights (activations, temporaries, gradients, optimizer states, logits) and that plus the
weights.

    python benchmarks/train_throughput.py                      # the organism on CPU
    python benchmarks/train_throughput.py --mistral-7b-shape   # random Mistral-7B on a GPU

`dvc repro benchmarks/dvc.yaml` runs the CPU one and writes benchmarks/results/train.json, which
`dvc metrics show` prints.
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

from soo.batching import collate_legacy
from soo.config import TrainParams, load_params
from soo.data import PairRecord, read_jsonl
from soo.loss import legacy_logit_kl
from soo.models import load_model
from soo.objective import SooForward, add_lora
from soo.train import capability_texts, make_optimizer, train_step

ROOT = Path(__file__).resolve().parents[1]

Step = Callable[[list[PairRecord]], None]


def mistral_7b_shape(device: str, **sizes: int) -> torch.nn.Module:
    """Mistral-7B-v0.2's architecture with random weights (nothing downloaded); `sizes` replace
    its dimensions (a toy of the same architecture for a CPU)."""
    from transformers import AutoModelForCausalLM, MistralConfig

    shape = {  # Mistral-7B-Instruct-v0.2's config.json
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
    }
    config = MistralConfig(
        vocab_size=32000,
        max_position_embeddings=32768,
        rope_theta=1e6,
        sliding_window=None,
        **(shape | sizes),
    )
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model.eval()


def ours(
    model, tokenizer, device: str, params: TrainParams
) -> tuple[Step, torch.nn.Module, torch.optim.Optimizer]:
    peft_model = add_lora(model, params, seed=0)
    peft_model.train()
    forward = SooForward(peft_model, params)
    optimizer, scheduler = make_optimizer(peft_model, params, total_steps=10**6)
    calls = [0]
    neutral = capability_texts(params)

    def step(pairs: list[PairRecord]) -> None:  # the trainer's own step (soo.train.train_step)
        calls[0] += 1
        train_step(
            forward,
            peft_model,
            tokenizer,
            pairs,
            neutral,
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

    def step(pairs: list[PairRecord]) -> None:
        batch = {k: v.to(device) for k, v in collate_legacy(tokenizer, pairs).items()}
        n = len(pairs)
        with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):  # two forwards
            self_logits = peft_model(
                input_ids=batch["input_ids"][:n], attention_mask=batch["attention_mask"][:n]
            ).logits
            other_logits = peft_model(
                input_ids=batch["input_ids"][n:], attention_mask=batch["attention_mask"][n:]
            ).logits
            loss, _ = legacy_logit_kl(self_logits, other_logits)
        scaler.scale(loss).backward()  # accumulated as released: the losses add up
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
        resident = torch.cuda.memory_allocated()  # these weights and anything else already held
        for batch in work:
            step(batch)
        torch.cuda.synchronize()
        above = torch.cuda.max_memory_allocated() - resident
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
    parser.add_argument("--params", default=str(ROOT / "params.yaml"), help="the shipped setting")
    args = parser.parse_args()
    shipped = load_params(args.params).train

    device = "cuda" if torch.cuda.is_available() else "cpu"
    base, tokenizer = load_model(args.model, device=device)
    if args.mistral_7b_shape:
        if device != "cuda":
            raise SystemExit("--mistral-7b-shape needs a GPU (about 15 GB of bf16 weights)")
        base = mistral_7b_shape(device)
    pairs = read_jsonl(args.pairs, PairRecord)
    work = batches(pairs, args.steps)
    loops = {
        "shipped": lambda m, t, d: ours(m, t, d, shipped),
        "paper": lambda m, t, d: ours(m, t, d, TrainParams()),  # layer 0.6 o_proj, r8, lr 1e-4
        "released": released,
    }
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
        "speedup": {k: rate[k] / rate["released"] for k in ("shipped", "paper")},
        "memory_ratio": {
            k: memory[k]["peak_bytes"] / memory["released"]["peak_bytes"]
            for k in ("shipped", "paper")
        },
        "memory_ratio_above_weights": {
            k: memory[k]["peak_above_weights_bytes"]
            / memory["released"]["peak_above_weights_bytes"]
            for k in ("shipped", "paper")
        },
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
    for k in ("shipped", "paper"):
        print(
            f"{k}: speed-up {results['speedup'][k]:.2f}x vs released | peak memory ratio "
            f"{results['memory_ratio'][k]:.3f}, above weights "
            f"{results['memory_ratio_above_weights'][k]:.3f}"
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
