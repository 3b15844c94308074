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
    The weights give every pair the same total weight 1 / B, whatever its length: a batch's loss
    is the mean of its pairs' losses, so batches split across workers average to the same value.
    """
    batch = self_acts.shape[0]
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
        per_token = (1.0 / (n_self.float() * batch))[:, None].expand(-1, width)  # (B, W)
        return self_acts[:, :width][keep], other_acts[:, :width][keep], per_token[keep]
    uniform = torch.full((batch,), 1.0 / batch, device=self_acts.device)
    if alignment == "last":
        rows = torch.arange(batch, device=self_acts.device)
        s = self_acts[rows, self_mask.sum(1) - 1]  # (B, D)
        o = other_acts[rows, other_mask.sum(1) - 1]
        return s, o, uniform
    if alignment == "mean":
        s = (self_acts * self_mask[..., None]).sum(1) / self_mask.sum(1, keepdim=True)
        o = (other_acts * other_mask[..., None]).sum(1) / other_mask.sum(1, keepdim=True)
        return s, o, uniform
    raise ValueError(f"unknown alignment {alignment!r}: use full, last or mean")


def soo_mse(
    self_acts: dict[str, torch.Tensor],
    other_acts: dict[str, torch.Tensor],
    self_mask: torch.Tensor,
    other_mask: torch.Tensor,
    alignment: Alignment = "full",
) -> tuple[torch.Tensor, dict[str, float]]:
    """The paper's SOO loss: mean squared error between self and other activations, averaged over
    the captured modules. Per pair it is the mean over the matched tokens and hidden units; a
    batch's loss is the mean over its pairs (pairs of equal length: the plain MSE of the batch).
    Diagnostics per module: mse, cosine similarity and the norm ratio |other| / |self| of the
    matched vectors."""
    losses, diagnostics = [], {}
    for name in self_acts:
        s, o, weight = align(self_acts[name], other_acts[name], self_mask, other_mask, alignment)
        s, o = s.float(), o.float()
        mse = (weight * (s - o).pow(2).mean(-1)).sum()  # (N,) -> ()
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


def capability_kl(
    logits: torch.Tensor,  # (B, T, V) of the model being trained
    base_logits: torch.Tensor,  # (B, T, V) of the frozen base model on the same prompts
    mask: torch.Tensor,  # (B, T)
) -> tuple[torch.Tensor, dict[str, float]]:
    """Capability retention: KL(base || tuned) of the next-token distributions on neutral prompts,
    the mean over each prompt's real tokens, then over prompts."""
    per_token = F.kl_div(
        F.log_softmax(logits.float(), dim=-1),
        F.log_softmax(base_logits.float(), dim=-1),
        log_target=True,
        reduction="none",
    ).sum(-1)  # (B, T)
    weight = mask.float() / (mask.sum(1, keepdim=True).float() * mask.shape[0])
    kl = (per_token * weight).sum()
    return kl, {"capability_kl": kl.item()}


def answer_nll(
    logits: torch.Tensor,  # (B, T, V)
    input_ids: torch.Tensor,  # (B, T)
    answer_mask: torch.Tensor,  # (B, T): 1 on the answer's tokens
) -> tuple[torch.Tensor, dict[str, float]]:
    """The supervised baseline's loss: the negative log-likelihood of each example's answer
    tokens (the mean over them), then the mean over examples, so each weighs the same."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    token = -logp.gather(-1, input_ids[:, 1:, None])[..., 0]  # (B, T-1): token t+1
    mask = answer_mask[:, 1:].float()
    per_example = (token * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    loss = per_example.mean()
    return loss, {"answer_nll": loss.item()}
