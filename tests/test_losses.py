"""JEPA / MLM losses against known answers, padding invariance, and the λ balancer's gradients."""
import math

import pytest
import torch
import torch.nn.functional as F

from jepa_core.model.losses import LossBalancer, jepa_loss, mlm_loss


def test_jepa_cosine_known_values():
    t = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    assert jepa_loss(t, t, valid).item() == pytest.approx(0.0, abs=1e-6)
    assert jepa_loss(-t, t, valid).item() == pytest.approx(2.0, abs=1e-6)
    ortho = torch.tensor([[[0.0, 5.0], [1.0, 0.0], [1.0, -1.0]]])
    assert jepa_loss(ortho, t, valid).item() == pytest.approx(1.0, abs=1e-6)


def test_jepa_mse_and_smooth_l1_known_values():
    pred = torch.tensor([[[0.0, 0.0], [2.0, 0.5]]])
    target = torch.tensor([[[3.0, 0.0], [0.0, 0.0]]])
    valid = torch.ones(1, 2, dtype=torch.bool)
    assert jepa_loss(pred, target, valid, "mse").item() == pytest.approx((9 + 0 + 4 + 0.25) / 4)
    # smooth-L1 (beta 1): |d| - 0.5 for |d| >= 1, 0.5 d² otherwise
    assert jepa_loss(pred, target, valid, "smooth_l1").item() == pytest.approx((2.5 + 0 + 1.5 + 0.125) / 4)


@pytest.mark.parametrize("kind", ["cosine", "smooth_l1", "mse"])
def test_jepa_loss_ignores_padded_slots(kind):
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 5, 8, generator=g, requires_grad=True)
    target = torch.randn(3, 5, 8, generator=g)
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    base = jepa_loss(pred, target, valid, kind)
    base.backward()
    assert torch.all(pred.grad[~valid] == 0)  # padded predictions receive no gradient

    pred2, target2 = pred.detach().clone(), target.clone()
    pred2[~valid] = torch.randn(int((~valid).sum()), 8, generator=g) * 100
    target2[~valid] = float("nan")
    assert jepa_loss(pred2, target2, valid, kind).item() == pytest.approx(base.item(), abs=1e-6)
    # ...and the mean is over real tokens only, not over slots
    if kind == "cosine":
        expected = (1 - F.cosine_similarity(pred[valid], target[valid], dim=-1)).mean()
        assert base.item() == pytest.approx(expected.item(), abs=1e-6)


def test_empty_selections_give_zero_not_nan():
    pred = torch.randn(2, 3, 4, requires_grad=True)
    loss = jepa_loss(pred, torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(pred.grad == 0)
    assert mlm_loss(torch.zeros(0, 10, requires_grad=True), torch.zeros(0, dtype=torch.long)).item() == 0.0


def test_jepa_loss_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind='l2'"):
        jepa_loss(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), torch.ones(1, 1, dtype=torch.bool), "l2")


def test_mlm_loss_uniform_logits_is_log_vocab():
    logits = torch.zeros(7, 50)
    assert mlm_loss(logits, torch.arange(7)).item() == pytest.approx(math.log(50), rel=1e-6)
    logits = torch.randn(4, 10)
    labels = torch.tensor([1, 2, 3, 4])
    assert mlm_loss(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels).item())


@pytest.mark.parametrize("w", [0.0, 1.3, -2.0])
def test_learned_lambda_gradient_is_lam_1_minus_lam_times_loss_gap(w):
    bal = LossBalancer("learned")
    with torch.no_grad():
        bal.lambda_logit.fill_(w)
    l_jepa, l_mlm = torch.tensor(0.7), torch.tensor(6.2)
    total, lam = bal(l_jepa, l_mlm)
    lam_expected = 1 / (1 + math.exp(-w))
    assert lam.item() == pytest.approx(lam_expected, rel=1e-6)
    assert total.item() == pytest.approx(lam_expected * 0.7 + (1 - lam_expected) * 6.2, rel=1e-6)
    total.backward()
    # Negative whenever L_jepa < L_mlm: gradient descent raises λ toward the smaller loss (docs/PROTOCOL.md, defect 4).
    assert bal.lambda_logit.grad.item() == pytest.approx(lam_expected * (1 - lam_expected) * (0.7 - 6.2), rel=1e-5)
    assert not lam.requires_grad


def test_fixed_lambda_has_no_parameters():
    bal = LossBalancer("fixed", fixed_lambda=0.25)
    total, lam = bal(torch.tensor(2.0), torch.tensor(4.0))
    assert total.item() == pytest.approx(0.25 * 2 + 0.75 * 4)
    assert lam.item() == 0.25
    assert list(bal.parameters()) == [] and bal.no_decay_parameters() == []


def test_uncertainty_weighting_value_lambda_and_gradients():
    bal = LossBalancer("uncertainty")
    with torch.no_grad():
        bal.log_vars.copy_(torch.tensor([0.5, -1.0]))
    l_jepa, l_mlm = torch.tensor(0.8), torch.tensor(5.0)
    total, lam = bal(l_jepa, l_mlm)
    assert total.item() == pytest.approx(math.exp(-0.5) * 0.8 + 0.5 + math.exp(1.0) * 5.0 - 1.0, rel=1e-6)
    assert lam.item() == pytest.approx(math.exp(-0.5) / (math.exp(-0.5) + math.exp(1.0)), rel=1e-6)
    total.backward()
    expected = [1 - math.exp(-0.5) * 0.8, 1 - math.exp(1.0) * 5.0]  # d/ds (e^{-s} L + s)
    assert bal.log_vars.grad.tolist() == pytest.approx(expected, rel=1e-5)
    assert LossBalancer("uncertainty")(l_jepa, l_mlm)[1].item() == pytest.approx(0.5)  # s₀ = 0 → λ = 0.5


def test_balancer_parameters_are_exposed_for_no_weight_decay():
    learned = LossBalancer("learned")
    assert [n for n, _ in learned.named_parameters()] == ["lambda_logit"]
    assert learned.no_decay_parameters()[0] is learned.lambda_logit
    assert learned.lambda_logit.item() == 0.0  # w₀ = 0 → λ₀ = 0.5
    with pytest.raises(ValueError, match="mode='auto'"):
        LossBalancer("auto")
    with pytest.raises(ValueError, match="fixed_lambda=1.5"):
        LossBalancer("fixed", fixed_lambda=1.5)
