"""Latent SOO: how close the model's activations are on self and other prompts, layer by layer,
for attention (o_proj output) and MLP outputs, on the probe pairs."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from soo.batching import collate_pairs
from soo.capture import ActivationCapture
from soo.data import PairRecord
from soo.loss import Alignment, soo_mse
from soo.models import num_layers, resolve_modules


@torch.no_grad()
def latent_soo(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[PairRecord],
    patterns: dict[str, str],
    alignment: Alignment = "full",
    batch_size: int = 16,
) -> list[dict]:
    """Rows {module_type, layer, mse, cosine}: the mean over pairs of each pair's MSE (over its
    matched tokens and hidden units) and of its matched vectors' mean cosine similarity."""
    layers = list(range(num_layers(model)))
    modules, owner = {}, {}
    for kind, pattern in patterns.items():
        for name, module in resolve_modules(model, pattern, layers).items():
            layer = int(name.split(".layers.")[1].split(".")[0])
            modules[name], owner[name] = module, (kind, layer)
    sums = {name: [0.0, 0.0] for name in modules}
    with ActivationCapture(model, modules, early_exit=False) as capture:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            batch = {k: v.to(model.device) for k, v in collate_pairs(tokenizer, chunk).items()}
            acts = capture.run(**batch)
            b, mask = len(chunk), batch["attention_mask"]
            for name, act in acts.items():
                _, diag = soo_mse({name: act[:b]}, {name: act[b:]}, mask[:b], mask[b:], alignment)
                sums[name][0] += diag[f"{name}/mse"] * b
                sums[name][1] += diag[f"{name}/cosine"] * b
    return [
        {
            "module_type": owner[name][0],
            "layer": owner[name][1],
            "mse": total[0] / len(pairs),
            "cosine": total[1] / len(pairs),
        }
        for name, total in sums.items()
    ]
