"""DINO: its loss, centre, teacher temperature and momentum teacher against computations written out here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hallucinator import Hallucinator, methods
from hallucinator.methods.memory import cosine_momentum
from tests.conftest import TinyNet

SMALL = {"out_dim": 7, "hidden_dim": 9, "bottleneck_dim": 5}
LAM = 0.1


def build(hallucinator: bool = True) -> methods.DINO:
    torch.manual_seed(0)
    h = Hallucinator(dim=5, num_layers=2, extrapolation=(LAM, LAM)) if hallucinator else False
    return methods.build("dino", TinyNet(), hallucinator=h, **SMALL).double()


def crops(locals_: int = 2) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    globals_ = [torch.randn(4, 3, 8, 8, generator=generator, dtype=torch.float64) for _ in range(2)]
    return globals_ + [torch.randn(4, 3, 4, 4, generator=generator, dtype=torch.float64) for _ in range(locals_)]


def head_by_hand(head, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The head written out: MLP, L2-normalise, cosine to each prototype (weight norm with g = 1)."""
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    x = features
    for i, linear in enumerate(linears):
        x = x @ linear.weight.T + linear.bias
        if i < len(linears) - 1:
            x = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))  # GELU
    z = x / x.norm(dim=1, keepdim=True)
    prototypes = head.last_layer.parametrizations.weight.original1
    return z, z @ (prototypes / prototypes.norm(dim=1, keepdim=True)).T


def test_loss_matches_an_independent_computation() -> None:
    model = build().eval()  # eval: no teacher update and no centre update, so the expected values stay put
    model.teacher_temp = model.teacher_temperature_at(0.05)  # half-way through its warm-up (0.1 of training)
    generator = torch.Generator().manual_seed(2)
    model.center.copy_(torch.randn(1, 7, generator=generator, dtype=torch.float64))
    views = crops()
    out = model(*views)

    t_temp = 0.04 + (0.07 - 0.04) * 0.5
    student = [head_by_hand(model.head, model.backbone(v)) for v in views]
    teacher = [head_by_hand(model.teacher_head, model.teacher_backbone(v)) for v in views[:2]]
    probs = [torch.softmax((logits - model.center) / t_temp, dim=1) for _, logits in teacher]
    terms = []
    for i in range(2):
        for v in range(len(views)):
            if v != i:
                log_p = torch.log_softmax(student[v][1] / 0.1, dim=1)
                terms.append(-(probs[i] * log_p).sum(dim=1).mean())
    assert len(terms) == 2 * 4 - 2
    expected_original = sum(terms) / len(terms)
    torch.testing.assert_close(out["loss_original"], expected_original)

    q, k = student[0][0], teacher[1][0]  # student's view-1 bottleneck, teacher's view-2 bottleneck
    q_prime = q + LAM * (q - k)
    q_hat = model.hallucinator.net(torch.cat([q, q_prime], dim=1))
    prototypes = model.head.last_layer.parametrizations.weight.original1
    hal_logits = F.normalize(q_hat, dim=1) @ F.normalize(prototypes, dim=1).T
    expected_hal = -(probs[1] * torch.log_softmax(hal_logits / 0.1, dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(out["loss_hallucinated"], expected_hal)
    torch.testing.assert_close(out["loss"], 0.5 * expected_original + 0.5 * expected_hal)

    all_probs = torch.cat(probs)
    entropy = -(all_probs * all_probs.log()).sum(dim=1).mean()
    torch.testing.assert_close(out["teacher_entropy"], entropy)
    kl = sum(
        (probs[i] * (probs[i].log() - torch.log_softmax(student[v][1] / 0.1, dim=1))).sum(dim=1).mean()
        for i in range(2)
        for v in range(len(views))
        if v != i
    ) / len(terms)
    torch.testing.assert_close(out["teacher_student_kl"], kl)
    torch.testing.assert_close(out["pos_similarity"], F.cosine_similarity(q, k).mean())
    torch.testing.assert_close(out["hal_similarity"], F.cosine_similarity(q_hat, k).mean())
    assert out["features"].shape == (4, 6) and not out["features"].requires_grad


def test_update_target_moves_the_teacher_and_the_training_forward_the_centre() -> None:
    model = build().train()
    with torch.no_grad():  # a student apart from its teacher, as after optimiser steps
        for p in model.head.mlp.parameters():  # not the prototypes' magnitude, which norm_last_layer fixes at 1
            p.add_(0.1)
    old_teacher = [p.detach().clone() for p in model.teacher_head.parameters()]
    student = [p.detach().clone() for p in model.head.parameters()]
    model.center.fill_(0.5)
    views = crops(locals_=0)
    m = cosine_momentum(0.996, 0.3)
    model.update_target(m)
    for new, old, online in zip(model.teacher_head.parameters(), old_teacher, student):
        torch.testing.assert_close(new.detach(), m * old + (1 - m) * online)
    teacher = [p.detach().clone() for p in model.teacher_head.parameters()]
    model(*views)  # the forward leaves the teacher alone
    assert all(torch.equal(a, b) for a, b in zip(model.teacher_head.parameters(), teacher))
    _, logits = head_by_hand(model.teacher_head, model.teacher_backbone(torch.cat(views)))
    torch.testing.assert_close(model.center, 0.9 * 0.5 + 0.1 * logits.mean(dim=0, keepdim=True))


def test_teacher_temperature_warms_up_linearly_then_stays() -> None:
    model = build()
    for progress, expected in ((0.0, 0.04), (0.025, 0.0475), (0.1, 0.07), (0.7, 0.07)):
        assert model.teacher_temperature_at(progress) == pytest.approx(expected)
    assert model.teacher_temp == 0.04  # until a training loop sets it: the warm-up's start


def test_the_hallucinator_gets_gradient_and_false_builds_none() -> None:
    model = build().train()
    out = model(*crops())
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.hallucinator.parameters())
    assert all(p.grad is None for p in model.teacher_head.parameters())
    assert not model.head.last_layer.parametrizations.weight.original0.requires_grad  # norm_last_layer: g = 1
    plain = build(hallucinator=False).train()
    out = plain(*crops())
    assert plain.hallucinator is None and "loss_hallucinated" not in out and out["loss"] is out["loss_original"]


def test_local_crops_of_other_batches_or_sizes_are_refused() -> None:
    model = build()
    views = crops()
    with pytest.raises(ValueError, match="local crops must hold the batch's 4 images at one size"):
        model(*views[:3], torch.randn(4, 3, 6, 6, dtype=torch.float64))


def test_a_short_real_run_learns_without_collapse(cifar10_subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    """20 steps on CIFAR-10 with 2 global + 2 local crops: the loss falls once the centre has settled (its first
    steps move the teacher's distributions, hence the loss, while the centre catches up) and the teacher stays
    away from both collapses: one prototype for everything (entropy 0) and the uniform output (entropy log K,
    the student then copying it: KL 0). A 2-block ViT-Tiny on 16 px crops keeps it to seconds.
    """
    import timm

    from hallucinator.data import multicrop
    from hallucinator.data.multicrop import CropSpec

    images, _ = cifar10_subset
    torch.set_num_threads(1)  # small matrices: one thread is faster, and far faster on a busy machine (restored after)
    torch.manual_seed(0)
    backbone = timm.create_model(
        "vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2, num_classes=0, dynamic_img_size=True
    )
    k = 256
    model = methods.build("dino", backbone, out_dim=k, hidden_dim=256, bottleneck_dim=64).train()
    crops = multicrop.build("cifar10-simclr", CropSpec(2, 16, (0.4, 1.0)), CropSpec(2, 8, (0.05, 0.4)))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4, weight_decay=0.04)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 5))
    generator = torch.Generator().manual_seed(0)
    steps, losses, entropies, kls = 20, [], [], []
    for step in range(steps):
        model.teacher_temp = model.teacher_temperature_at(step / steps)
        model.update_target(cosine_momentum(model.momentum, step / steps, model.final_momentum))
        out = model(*crops(images[torch.randint(len(images), (32,), generator=generator)], generator=generator))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        warmup.step()
        losses.append(out["loss"].item())
        entropies.append(out["teacher_entropy"].item())
        kls.append(out["teacher_student_kl"].item())
    print(f"loss {losses}\nteacher entropy {entropies} (log K = {math.log(k):.2f})\nKL {kls}")
    assert sum(losses[15:]) / 5 < sum(losses[5:10]) / 5 - 0.05
    assert all(1.0 < h < math.log(k) - 0.5 for h in entropies[5:])
    assert sum(kls[15:]) / 5 > 0.2
