import pytest
import torch
from torch.testing import assert_close

from soo.loss import align, capability_kl, legacy_logit_kl, soo_mse

torch.manual_seed(0)


def masks(lengths: list[int], width: int) -> torch.Tensor:
    return torch.tensor([[1] * n + [0] * (width - n) for n in lengths])


@pytest.mark.parametrize("alignment", ["full", "last", "mean"])
def test_zero_when_self_equals_other(alignment):
    acts = {"m": torch.randn(3, 5, 4)}
    mask = masks([5, 3, 4], 5)
    loss, diag = soo_mse(acts, {"m": acts["m"].clone()}, mask, mask.clone(), alignment)
    assert loss.item() == 0.0 and diag["m/cosine"] == pytest.approx(1.0)


@pytest.mark.parametrize("alignment", ["full", "last", "mean"])
def test_padding_changes_nothing(alignment):
    s, o = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    mask = masks([4, 2], 4)
    base, _ = soo_mse({"m": s}, {"m": o}, mask, mask, alignment)
    # Wider padding filled with garbage: the loss must not move.
    pad = torch.full((2, 3, 3), 1e6)
    wide = masks([4, 2], 7)
    s2, o2 = torch.cat([s, pad], 1), torch.cat([o, -pad], 1)
    s2[1, 2:], o2[1, 2:] = 1e6, -1e6
    padded, _ = soo_mse({"m": s2}, {"m": o2}, wide, wide, alignment)
    assert_close(padded, base)


def test_full_alignment_hand_computed():
    s = torch.tensor([[[1.0, 0.0], [2.0, 2.0], [9.0, 9.0]]])  # third token is padding
    o = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [-9.0, 9.0]]])
    mask = masks([2], 3)
    loss, diag = soo_mse({"m": s}, {"m": o}, mask, mask, "full")
    # squared errors over the 2 real tokens x 2 units: 1, 0, 0, 4 -> mean 1.25
    assert_close(loss, torch.tensor(1.25))
    assert diag["m/mse"] == pytest.approx(1.25)


def test_last_and_mean_hand_computed():
    s = torch.tensor([[[1.0], [3.0], [100.0]]])
    o = torch.tensor([[[0.0], [0.0], [0.0]]])
    self_mask, other_mask = masks([2], 3), masks([1], 3)
    last, _ = soo_mse({"m": s}, {"m": o}, self_mask, other_mask, "last")
    mean, _ = soo_mse({"m": s}, {"m": o}, self_mask, other_mask, "mean")
    assert_close(last, torch.tensor(9.0))  # (3 - 0)^2
    assert_close(mean, torch.tensor(4.0))  # ((1 + 3) / 2 - 0)^2


def test_full_alignment_refuses_unequal_pairs():
    acts = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="pair 1 has 3 self and 4 other tokens"):
        align(acts, acts, masks([4, 3], 4), masks([4, 4], 4), "full")


def test_mean_over_modules():
    s = {"a": torch.ones(1, 1, 1), "b": torch.ones(1, 1, 1)}
    o = {"a": torch.zeros(1, 1, 1), "b": torch.ones(1, 1, 1) * 3}
    mask = masks([1], 1)
    loss, diag = soo_mse(s, o, mask, mask, "full")
    assert_close(loss, torch.tensor(2.5))  # (1 + 4) / 2
    assert set(diag) == {f"{m}/{k}" for m in "ab" for k in ("mse", "cosine", "norm_ratio")}


def test_legacy_kl_hand_computed():
    self_logits = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]]])  # (B=2, T=1, V=2)
    other_logits = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    kl, _ = legacy_logit_kl(self_logits, other_logits)
    p = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    q = torch.tensor([0.5, 0.5])
    expected = (p * (p.log() - q.log())).sum() / 2  # second pair contributes 0
    assert_close(kl, expected)


def test_each_pair_weighs_the_same_so_split_batches_average_to_the_whole():
    s, o = torch.randn(4, 6, 3), torch.randn(4, 6, 3)
    mask = masks([6, 2, 5, 3], 6)
    whole, _ = soo_mse({"m": s}, {"m": o}, mask, mask, "full")
    per_pair = [
        soo_mse({"m": s[i : i + 1]}, {"m": o[i : i + 1]}, mask[i : i + 1], mask[i : i + 1])[0]
        for i in range(4)
    ]
    assert_close(whole, torch.stack(per_pair).mean())
    halves = [soo_mse({"m": s[i::2]}, {"m": o[i::2]}, mask[i::2], mask[i::2])[0] for i in (0, 1)]
    assert_close(whole, torch.stack(halves).mean())  # what DDP's gradient average relies on


def test_capability_kl_hand_computed_and_zero_for_the_base():
    logits = torch.tensor([[[0.0, 0.0], [5.0, 5.0]]])  # second position is padding
    base = torch.tensor([[[1.0, 0.0], [-5.0, 9.0]]])
    mask = masks([1], 2)
    kl, diag = capability_kl(logits, base, mask)
    p = torch.softmax(torch.tensor([1.0, 0.0]), 0)  # base distribution
    expected = (p * (p.log() - torch.tensor([0.5, 0.5]).log())).sum()
    assert_close(kl, expected)
    assert diag["capability_kl"] == pytest.approx(expected.item())
    same, _ = capability_kl(base, base.clone(), mask)
    assert same.item() == pytest.approx(0.0, abs=1e-7)
