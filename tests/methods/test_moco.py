"""MoCo v1/v2: heads, loss placement, queue, momentum encoder, single-process shuffle-BN, bad input."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hallucinator import Hallucinator
from hallucinator.losses import info_nce
from hallucinator.methods import MoCo


def _keys(model: MoCo, view2: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(model.momentum_projector(model.momentum_backbone(view2)), dim=1)


def test_version_1_has_a_linear_head_and_t_007_version_2_an_mlp_and_t_02(tiny_net) -> None:
    v1, v2 = MoCo(tiny_net(), version=1), MoCo(tiny_net(), version=2)
    assert [type(m) for m in v1.projector] == [nn.Linear] and v1.temperature == 0.07
    assert [type(m) for m in v2.projector] == [nn.Linear, nn.ReLU, nn.Linear] and v2.temperature == 0.2
    assert (v2.projector[0].in_features, v2.projector[0].out_features, v2.projector[2].out_features) == (6, 6, 128)
    assert v2.queue.shape == (65536, 128) and v2.momentum == 0.999
    torch.testing.assert_close(v2.queue.norm(dim=1), torch.ones(65536))


@pytest.mark.parametrize("weight", [0.5, 0.2])
def test_hallucinated_query_is_scored_like_the_query_against_key_and_queue(tiny_net, views, weight: float) -> None:
    torch.manual_seed(0)
    hallucinator = Hallucinator(dim=4, num_layers=0, extrapolation=(0.3, 0.3))
    model = MoCo(tiny_net(), hallucinator=hallucinator, dim=4, queue_size=16, hallucination_weight=weight).eval()
    out = model(*views)
    with torch.no_grad():
        q = model.projector(model.backbone(views[0]))  # raw query: the Hallucinator sees it un-normalised
        k = _keys(model, views[1])
        original = info_nce(q, k, model.queue, 0.2)
        hallucinated = info_nce(1.3 * q - 0.3 * k, k, model.queue, 0.2)
    torch.testing.assert_close(out["loss_original"], original)
    torch.testing.assert_close(out["loss_hallucinated"], hallucinated)
    torch.testing.assert_close(out["loss"], (1 - weight) * original + weight * hallucinated)
    torch.testing.assert_close(out["pos_similarity"], F.cosine_similarity(q, k).mean())


def test_queue_pointer_and_contents_each_key_enqueued_once(tiny_net) -> None:
    torch.manual_seed(0)
    model = MoCo(tiny_net(), dim=4, queue_size=24, shuffle_bn_splits=2).train()
    initial = model.queue.clone()
    keys = []
    for step in range(4):
        view1, view2 = torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8)
        model(view1, view2)
        keys.append(_keys(model, view2))  # the momentum encoder as this step used it (no BatchNorm)
        if step == 0:
            assert int(model.queue_ptr) == 8
            torch.testing.assert_close(model.queue[:8], keys[0])
            torch.testing.assert_close(model.queue[8:], initial[8:])
    assert int(model.queue_ptr) == 8  # 4 batches of 8 in a queue of 24: wrapped around once
    torch.testing.assert_close(model.queue, torch.cat([keys[3], keys[1], keys[2]]))


def test_momentum_update_and_no_gradient_into_the_momentum_encoder(tiny_net, views) -> None:
    model = MoCo(tiny_net(), dim=4, queue_size=16, momentum=0.9, shuffle_bn_splits=1).train()
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)  # make the online encoder differ from its copy
    online = [p.detach().clone() for p in [*model.backbone.parameters(), *model.projector.parameters()]]
    target = [p.clone() for p in [*model.momentum_backbone.parameters(), *model.momentum_projector.parameters()]]
    assert model.final_momentum == model.momentum == 0.9  # MoCo's m is constant
    model.update_target(model.momentum)  # the training step's call, before the forward
    updated = [*model.momentum_backbone.parameters(), *model.momentum_projector.parameters()]
    moved = [p.clone() for p in updated]
    model(*views)["loss"].backward()
    for new, after, old, source in zip(updated, moved, target, online):
        torch.testing.assert_close(after, 0.9 * old + 0.1 * source)
        assert torch.equal(new, after)  # the forward itself moves no key-encoder weight
        assert not new.requires_grad and new.grad is None
    for module in (model.backbone, model.projector, model.hallucinator):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_eval_mode_neither_updates_nor_enqueues(tiny_net, views) -> None:
    model = MoCo(tiny_net(), dim=4, queue_size=16).eval()
    queue, momentum = model.queue.clone(), [p.clone() for p in model.momentum_backbone.parameters()]
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    model(*views)
    assert int(model.queue_ptr) == 0 and torch.equal(model.queue, queue)
    assert all(torch.equal(a, b) for a, b in zip(model.momentum_backbone.parameters(), momentum))


def test_single_process_shuffle_bn_normalises_each_key_within_a_random_group(tiny_net) -> None:
    torch.manual_seed(0)
    model = MoCo(tiny_net(batch_norm=True), version=1, dim=4, queue_size=16, shuffle_bn_splits=2).train()
    view1, view2 = torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8)
    model(view1, view2)
    keys = model.queue[:8]
    groups = [list(g) for g in itertools.combinations(range(8), 4)]
    with torch.no_grad():  # every candidate group of 4 keys, normalised with that group's own statistics
        candidates = [F.normalize(model.momentum_projector(model.momentum_backbone(view2[g])), dim=1) for g in groups]
    whole_batch = _keys(model, view2)
    for i in range(8):
        assert any(torch.allclose(c[g.index(i)], keys[i], atol=1e-5) for g, c in zip(groups, candidates) if i in g)
        assert not torch.allclose(whole_batch[i], keys[i], atol=1e-3)


def test_bad_queue_and_batch_sizes_say_what_to_change(tiny_net) -> None:
    with pytest.raises(ValueError, match="queue_size=20 is not a multiple of the global batch size 8"):
        MoCo(tiny_net(), queue_size=20, shuffle_bn_splits=1).train()(torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 16"):
        MoCo(tiny_net(), queue_size=64, shuffle_bn_splits=8).train()(torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8))
    with pytest.raises(ValueError, match="version"):
        MoCo(tiny_net(), version=3)


class _MoCoBeforeTheSharedHelpers(MoCo):
    """MoCo's momentum update and enqueue as they were written before ``methods.memory`` (the old code path)."""

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        online = [*self.backbone.parameters(), *self.projector.parameters()]
        target = [*self.momentum_backbone.parameters(), *self.momentum_projector.parameters()]
        for p_online, p_target in zip(online, target):
            p_target.lerp_(p_online.detach(), 1.0 - momentum)

    @torch.no_grad()
    def _enqueue(self, k: torch.Tensor) -> None:
        ptr = int(self.queue_ptr)
        self.queue[ptr : ptr + k.shape[0]] = k
        self.queue_ptr.fill_((ptr + k.shape[0]) % self.queue.shape[0])


@pytest.mark.parametrize("version", [1, 2])
def test_moco_on_the_shared_momentum_and_queue_helpers_is_bit_identical_to_the_old_code(tiny_net, version: int) -> None:
    runs = []
    for cls in (MoCo, _MoCoBeforeTheSharedHelpers):
        torch.manual_seed(0)
        model = cls(tiny_net(batch_norm=True), version=version, dim=4, queue_size=32, momentum=0.9, shuffle_bn_splits=2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        generator = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(5):  # wraps the queue around once
            model.update_target(model.momentum)
            out = model.train()(
                torch.randn(8, 3, 8, 8, generator=generator), torch.randn(8, 3, 8, 8, generator=generator)
            )
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
            losses.append(out["loss"].detach())
        runs.append((torch.stack(losses), model.state_dict()))
    (new_losses, new_state), (old_losses, old_state) = runs
    assert torch.equal(new_losses, old_losses)
    assert new_state.keys() == old_state.keys()
    assert all(torch.equal(new_state[key], old_state[key]) for key in new_state), "state differs"


def _info_nce_by_hand(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    q, k = F.normalize(q, dim=1).double(), F.normalize(k, dim=1).double()
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.double().T], dim=1) / temperature
    return -(logits[:, 0] - torch.logsumexp(logits, dim=1)).mean()


def test_concat_loss_form_is_one_info_nce_over_both_pairs_and_enqueues_every_key_twice(tiny_net, views) -> None:
    """The authors' code: [q; q_hat] against [k; k] in one InfoNCE, [k; k] enqueued (the pointer moves 2N)."""
    torch.manual_seed(0)
    hallucinator = Hallucinator(dim=4, num_layers=0, extrapolation=(0.3, 0.3))
    model = MoCo(tiny_net(), hallucinator=hallucinator, dim=4, queue_size=32, shuffle_bn_splits=1, loss_form="concat")
    model.train()
    queue = model.queue.clone()
    out = model(*views)
    n = views[0].shape[0]
    with torch.no_grad():
        q = model.projector(model.backbone(views[0]))
        k = _keys(model, views[1])  # TinyNet has no BatchNorm: the momentum encoder as the step used it
        q_hat = 1.3 * q - 0.3 * k
        joint = _info_nce_by_hand(torch.cat([q, q_hat]), torch.cat([k, k]), queue, model.temperature)
    torch.testing.assert_close(out["loss"].double(), joint)
    torch.testing.assert_close(out["loss_original"].double(), _info_nce_by_hand(q, k, queue, model.temperature))
    assert int(model.queue_ptr) == 2 * n
    torch.testing.assert_close(model.queue[: 2 * n], torch.cat([k, k]))
    torch.testing.assert_close(model.queue[2 * n :], queue[2 * n :])
    with pytest.raises(ValueError, match="queue_size=24 is not a multiple of the global batch size 16"):
        MoCo(tiny_net(), hallucinator=True, dim=4, queue_size=24, shuffle_bn_splits=1, loss_form="concat")(*views)
