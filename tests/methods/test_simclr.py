"""SimCLR: head, the average of two NT-Xent losses, run-time hallucination weight."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hallucinator import Hallucinator
from hallucinator.losses import nt_xent
from hallucinator.methods import BYOL, SimCLR
from hallucinator.methods.base import check_loss_form


def test_head_is_linear_bn_relu_linear_with_the_backbone_width(tiny_net) -> None:
    model = SimCLR(tiny_net())
    assert [type(m) for m in model.projector] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (model.projector[0].out_features, model.projector[3].out_features) == (6, 128)
    assert model.temperature == 0.5 and model.hallucinator.dim == 128


def test_loss_is_the_weighted_average_of_nt_xent_on_original_and_hallucinated_pairs(tiny_net, views) -> None:
    torch.manual_seed(0)
    hallucinator = Hallucinator(dim=5, num_layers=0, extrapolation=(0.3, 0.3))
    model = SimCLR(tiny_net(), hallucinator=hallucinator, dim=5, temperature=0.4).eval()
    with torch.no_grad():
        q, k = model.projector(model.backbone(views[0])), model.projector(model.backbone(views[1]))
        original = nt_xent(q, k, 0.4)
        hallucinated = nt_xent(1.3 * q - 0.3 * k, k, 0.4)  # a separate NT-Xent: q_hat's negatives are q_hat and k rows
    for weight in (0.5, 0.25, 0.0):
        model.hallucination_weight = weight  # what the engine's warm-up does at run time
        out = model(*views)
        torch.testing.assert_close(out["loss_original"], original)
        torch.testing.assert_close(out["loss_hallucinated"], hallucinated)
        torch.testing.assert_close(out["loss"], (1 - weight) * original + weight * hallucinated)
        torch.testing.assert_close(out["pos_similarity"], F.cosine_similarity(q, k).mean())


def test_gradients_reach_the_encoder_head_and_hallucinator(tiny_net, views) -> None:
    model = SimCLR(tiny_net(), dim=8).train()
    model(*views)["loss"].backward()
    for module in (model.backbone, model.projector, model.hallucinator):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_authors_head_has_no_batchnorm_and_loss_scale_multiplies_both_losses(tiny_net, views) -> None:
    torch.manual_seed(0)
    plain = SimCLR(tiny_net(), hallucinator=Hallucinator(dim=5, num_layers=0, extrapolation=(0.3, 0.3)), dim=5)
    torch.manual_seed(0)
    authors = SimCLR(
        tiny_net(),
        hallucinator=Hallucinator(dim=5, num_layers=0, extrapolation=(0.3, 0.3)),
        dim=5,
        head_batchnorm=False,
        loss_scale=0.5 / 0.07,
    )
    assert [type(m) for m in authors.projector] == [nn.Linear, nn.ReLU, nn.Linear]
    assert authors.projector[0].bias is not None  # no BatchNorm after it to cancel a bias
    out = authors.eval()(*views)
    with torch.no_grad():
        q, k = authors.projector(authors.backbone(views[0])), authors.projector(authors.backbone(views[1]))
    scale = 0.5 / 0.07
    torch.testing.assert_close(out["loss_original"], scale * nt_xent(q, k, 0.5))
    torch.testing.assert_close(out["loss_hallucinated"], scale * nt_xent(1.3 * q - 0.3 * k, k, 0.5))
    assert [type(m) for m in plain.projector] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]


def test_hal_similarity_and_the_symmetric_comparison_point(tiny_net, views) -> None:
    """Fig. 4: hal_similarity is cos(q_hat, k) of the hallucinated pair; in symmetric mode the pair is
    (q', k') of the normalised features, and the hallucinated NT-Xent scores exactly that pair."""
    for mode in ("asymmetric", "symmetric"):
        torch.manual_seed(0)
        hallucinator = Hallucinator(dim=5, num_layers=0, extrapolation=(0.3, 0.3), extrapolation_mode=mode)
        model = SimCLR(tiny_net(), hallucinator=hallucinator, dim=5).eval()
        with torch.no_grad():
            q, k = model.projector(model.backbone(views[0])), model.projector(model.backbone(views[1]))
        if mode == "symmetric":
            q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
            pair = (1.3 * q - 0.3 * k, 1.3 * k - 0.3 * q)
        else:
            pair = (1.3 * q - 0.3 * k, k)
        out = model(*views)
        torch.testing.assert_close(out["hal_similarity"], F.cosine_similarity(*pair).mean())
        torch.testing.assert_close(out["loss_hallucinated"], nt_xent(*pair, 0.5))
        assert not out["hal_similarity"].requires_grad


def test_concat_loss_form_is_one_nt_xent_over_q_and_q_hat_against_k_twice(tiny_net, views) -> None:
    """The authors' code: NT-Xent over the 4N rows [q; q_hat; k; k], each positive's duplicate a negative."""
    torch.manual_seed(0)
    hallucinator = Hallucinator(dim=5, num_layers=0, extrapolation=(0.3, 0.3))
    model = SimCLR(tiny_net(), hallucinator=hallucinator, dim=5, temperature=0.4, loss_form="concat").eval()
    out = model(*views)
    with torch.no_grad():
        q, k = (model.projector(model.backbone(v)) for v in views)
        rows = F.normalize(torch.cat([q, 1.3 * q - 0.3 * k, k, k]), dim=1).double()
        m = rows.shape[0] // 2  # anchors 0..m-1 pair with m..2m-1
        logits = rows @ rows.T / 0.4
        logits.fill_diagonal_(float("-inf"))
        positive = torch.cat([torch.arange(m, 2 * m), torch.arange(m)])
        by_hand = -logits.log_softmax(dim=1)[torch.arange(2 * m), positive].mean()
    torch.testing.assert_close(out["loss"].double(), by_hand)
    assert "loss_hallucinated" in out and out["loss_original"].requires_grad is False
    with pytest.raises(ValueError, match="BYOL has no concatenated loss form"):
        check_loss_form(BYOL, "concat", None)
