"""The steering-vector baseline (contrastive activation addition, no training): the mean
self-minus-other activation at the SOO site over the SOO pairs, added to that module's output at
every position at inference, times a strength chosen on dev (soo.pipeline.steer)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from soo.batching import collate_pairs
from soo.capture import ActivationCapture
from soo.data import PairRecord
from soo.loss import align

VECTOR_FILE = "vector.safetensors"
STEER_FILE = "steer.json"  # the module, the chosen strength and the dev table


@torch.no_grad()
def steering_vector(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PairRecord],
    module_name: str,
    module: nn.Module,
    alignment: str = "full",
    batch_size: int = 16,
) -> torch.Tensor:
    """(D,): the mean over pairs of the self minus the other activation, each pair's difference
    averaged over its matched tokens as the SOO loss matches them (`alignment`)."""
    total, count = None, 0
    with ActivationCapture(model, {module_name: module}) as capture:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            batch = collate_pairs(tokenizer, chunk)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            acts = capture.run(**batch)[module_name].float()
            b, mask = len(chunk), batch["attention_mask"]
            s, o, weight = align(acts[:b], acts[b:], mask[:b], mask[b:], alignment)
            part = (weight[:, None] * (s - o)).sum(0) * b  # the chunk's sum of pair means
            total = part if total is None else total + part
            count += b
    return total / count


class Steering:
    """A forward hook adding `strength * vector` to one module's output; `off()` suspends it (the
    unsteered base, for the KL of capability)."""

    def __init__(self, module: nn.Module, vector: torch.Tensor, strength: float):
        self.delta = (strength * vector).to(next(module.parameters()).device)
        self.strength, self.active = strength, True
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args, output):
        if not self.active:
            return None
        if isinstance(output, tuple):
            return (output[0] + self.delta.to(output[0].dtype), *output[1:])
        return output + self.delta.to(output.dtype)

    @contextlib.contextmanager
    def off(self) -> Iterator[None]:
        self.active = False
        try:
            yield
        finally:
            self.active = True

    def remove(self) -> None:
        self.handle.remove()


def save_vector(vector: torch.Tensor, folder: Path) -> Path:
    path = folder / VECTOR_FILE
    save_file({"vector": vector.contiguous().cpu()}, str(path))
    return path


def load_vector(folder: Path) -> torch.Tensor:
    return load_file(str(folder / VECTOR_FILE))["vector"]
