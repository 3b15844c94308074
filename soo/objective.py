"""The SOO objective on one model: LoRA wrapping, the module DDP wraps, and the loss of one batch.

Shared by the Ray worker loop (soo.train) and the throughput benchmark, so both measure the same
computation.
"""

from __future__ import annotations

import logging

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from soo.capture import ActivationCapture
from soo.config import LoraParams, TrainParams
from soo.errors import first_line
from soo.loss import answer_nll, capability_kl, legacy_logit_kl, soo_mse
from soo.models import ModelError, resolve_layer, resolve_modules

log = logging.getLogger(__name__)


def needs_logits(train: TrainParams) -> bool:
    """Whether the loss needs the full forward (final logits) rather than the SOO layer only."""
    return train.loss in ("legacy_logit_kl", "sft") or train.capability.weight > 0


def add_lora(model: nn.Module, train: TrainParams, seed: int) -> PeftModel:
    """Wrap `model` with LoRA adapters initialised from `seed`.

    With the paper's loss (MSE at one layer, no capability term) adapters in the layers above the
    SOO layer never receive a gradient and stay at their zero update, so they are left out: the
    same function of the inputs, less memory, and DDP finds no unused parameters.
    """
    lora: LoraParams = train.lora
    top = None if needs_logits(train) else resolve_layer(model, train.layer)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        layers_to_transform=None if top is None else list(range(top + 1)),
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        raise ModelError(
            f"train.lora.target_modules {list(lora.target_modules)}: {first_line(err)}; name "
            "modules of this model (e.g. q_proj, v_proj for Llama and Mistral)"
        ) from None


class SooForward(nn.Module):
    """What DDP wraps: one forward over a [self; other; neutral] batch that returns the captured
    activations (name -> (N, T, D)) and, when the forward ran to the end, "logits".

    The capture hooks are registered once, after LoRA wrapping, and stay until `close()`, so a
    backward that recomputes layers (gradient checkpointing) still finds them. The early exit is
    caught inside this forward, so DDP always sees a forward that returned.
    """

    def __init__(self, model: nn.Module, train: TrainParams):
        super().__init__()
        self.model = model
        modules = resolve_modules(model, train.module, train.layer)
        early = train.early_exit and not needs_logits(train)
        self.capture = ActivationCapture(model, modules, early_exit=early).__enter__()
        self.names = list(modules)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        outputs = self.capture.run(input_ids=input_ids, attention_mask=attention_mask)
        if self.capture.model_output is not None:
            outputs["logits"] = self.capture.model_output.logits
        return outputs

    def close(self) -> None:
        self.capture.__exit__(None, None, None)


def batch_loss(
    outputs: dict[str, torch.Tensor],
    attention_mask: torch.Tensor,  # (2B + C, T)
    n_pairs: int,
    train: TrainParams,
    base_logits: torch.Tensor | None = None,  # (C, T, V): frozen base on the neutral rows
    answers: tuple[torch.Tensor, torch.Tensor] | None = None,  # loss sft: (input_ids, answer_mask)
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one batch from one forward's outputs; rows as `soo.batching.collate_pairs`
    (loss sft: as `soo.batching.collate_answers`, the examples then the neutral rows)."""
    b = n_pairs
    if train.loss == "legacy_logit_kl":
        # The released code's loss on its own batches (soo.batching.collate_legacy: padded to 128
        # on the tokenizer's side, so the activation MSE's token alignment does not apply).
        logits = outputs["logits"]
        loss, diagnostics = legacy_logit_kl(logits[:b], logits[b : 2 * b])
        diagnostics["loss"] = loss.item()
        return loss, diagnostics
    if train.loss == "sft":
        ids, answer_mask = answers
        loss, diagnostics = answer_nll(outputs["logits"][:b], ids[:b], answer_mask)
    else:
        self_mask, other_mask = attention_mask[:b], attention_mask[b : 2 * b]
        acts = {name: out for name, out in outputs.items() if name != "logits"}
        loss, diagnostics = soo_mse(
            {n: a[:b] for n, a in acts.items()},
            {n: a[b : 2 * b] for n, a in acts.items()},
            self_mask,
            other_mask,
            train.alignment,
        )
        diagnostics["soo_mse"] = loss.item()
    if train.capability.weight > 0:
        neutral = len(attention_mask) - len(base_logits)  # the neutral rows come last
        kl, extra = capability_kl(
            outputs["logits"][neutral:], base_logits, attention_mask[neutral:]
        )
        loss = loss + train.capability.weight * kl
        diagnostics.update(extra)
    diagnostics["loss"] = loss.item()
    return loss, diagnostics
