"""SOO losses: pure tensor code.

Shapes: B pairs, T tokens, D hidden size, V vocabulary. Masks are 1 on real tokens, 0 on padding;
padding never enters any loss.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Alignment = Literal["full", "last", "mean"]


def align(
    self_acts: torch.Tensor,  # (B, T, D)
    other_acts: torch.Tensor,  # (B, T', D)
    self_mask: torch.Tensor,  # (B, T)
    other_mask: torch.Tensor,  # (B, T')
    alignment: Alignment,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Matched self/other vectors and their weights: (N, D), (N, D), (N,).

    full: token i of the self prompt with token i of the other prompt, real tokens only (right
    padding; each pair must have the same number of real tokens); last: the last real token of
    each prompt; mean: the masked mean over real tokens.
    """
    if alignment == "full":
        n_self, n_other = self_mask.sum(1), other_mask.sum(1)
        unequal = (n_self != n_other).nonzero().flatten().tolist()
        if unequal:
            i = unequal[0]
            raise ValueError(
                f"alignment 'full' needs pairs of equal token length; pair {i} has "
                f"{int(n_self[i])} self and {int(n_other[i])} other tokens: use alignment "
                "'last' or 'mean', or equal-length prompts"
            )
        width = int(n_self.max())
        keep = self_mask[:, :width].bool()  # (B, W), equal to the other mask on the same span
        return (
            self_acts[:, :width][keep],
            other_acts[:, :width][keep],
            torch.ones(int(keep.sum()), device=self_acts.device),
        )
    if alignment == "last":
        rows = torch.arange(self_acts.shape[0], device=self_acts.device)
        s = self_acts[rows, self_mask.sum(1) - 1]  # (B, D)
        o = other_acts[rows, other_mask.sum(1) - 1]
        return s, o, torch.ones(s.shape[0], device=s.device)
    if alignment == "mean":
        s = (self_acts * self_mask[..., None]).sum(1) / self_mask.sum(1, keepdim=True)
        o = (other_acts * other_mask[..., None]).sum(1) / other_mask.sum(1, keepdim=True)
        return s, o, torch.ones(s.shape[0], device=s.device)
    raise ValueError(f"unknown alignment {alignment!r}: use full, last or mean")


def soo_mse(
    self_acts: dict[str, torch.Tensor],
    other_acts: dict[str, torch.Tensor],
    self_mask: torch.Tensor,
    other_mask: torch.Tensor,
    alignment: Alignment = "full",
) -> tuple[torch.Tensor, dict[str, float]]:
    """The paper's SOO loss: mean squared error between self and other activations, averaged over
    the captured modules. Diagnostics per module: mse, cosine similarity and the norm ratio
    |other| / |self| of the matched vectors."""
    losses, diagnostics = [], {}
    for name in self_acts:
        s, o, _ = align(self_acts[name], other_acts[name], self_mask, other_mask, alignment)
        s, o = s.float(), o.float()
        mse = F.mse_loss(s, o)  # mean over matched vectors and hidden units
        losses.append(mse)
        with torch.no_grad():
            diagnostics[f"{name}/mse"] = mse.item()
            diagnostics[f"{name}/cosine"] = F.cosine_similarity(s, o, dim=-1).mean().item()
            diagnostics[f"{name}/norm_ratio"] = (
                (o.norm(dim=-1) / s.norm(dim=-1).clamp_min(1e-8)).mean().item()
            )
    loss = torch.stack(losses).mean()
    return loss, diagnostics


def legacy_logit_kl(
    self_logits: torch.Tensor,  # (B, T, V)
    other_logits: torch.Tensor,  # (B, T, V)
) -> tuple[torch.Tensor, dict[str, float]]:
    """The released code's loss, for reproduction only: KL(softmax(other) || softmax(self)) on the
    final logits, summed over every position (padding included, as released) and divided by the
    batch size."""
    kl = (
        F.kl_div(
            F.log_softmax(self_logits.float(), dim=-1),
            F.softmax(other_logits.float(), dim=-1),
            reduction="sum",
        )
        / self_logits.shape[0]
    )
    return kl, {"legacy_kl": kl.item()}
