"""The online linear probe: its SGD step by hand, and that it leaves pre-training untouched."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hallucinator.engine import load_config, pretrain
from hallucinator.engine.online_linear import OnlineLinear


def test_first_step_from_zero_weights_matches_the_softmax_gradient_by_hand() -> None:
    torch.manual_seed(0)
    features = torch.randn(6, 4, dtype=torch.float32)
    labels = torch.tensor([0, 2, 1, -1, 2, 0])  # one unlabelled row: it must not count
    probe = OnlineLinear(4, 3, lr=0.1, momentum=0.9)
    loss, top1 = probe.step(features, labels)
    # zero weights: uniform softmax, loss log(3); gradient (p - onehot) x averaged over the 5 labelled rows
    labelled = labels >= 0
    x, y = features[labelled], F.one_hot(labels[labelled], 3).float()
    grad_w = ((1 / 3 - y).T @ x) / 5
    grad_b = (1 / 3 - y).sum(dim=0) / 5
    assert loss.item() == pytest.approx(torch.log(torch.tensor(3.0)).item(), rel=1e-6)
    torch.testing.assert_close(probe.linear.weight, -0.1 * grad_w)
    torch.testing.assert_close(probe.linear.bias, -0.1 * grad_b)
    # all logits tie at 0: argmax is class 0, right for the two labelled rows of class 0
    assert top1.item() == pytest.approx(100 * 2 / 5)
    assert probe.epoch_top1() == pytest.approx(40.0)
    probe.reset_epoch()
    assert probe.epoch_top1() == 0.0


def test_state_round_trip_and_held_out_top1() -> None:
    torch.manual_seed(0)
    features, labels = torch.randn(32, 4), torch.randint(0, 3, (32,))
    probe = OnlineLinear(4, 3)
    for _ in range(3):
        probe.step(features, labels)
    copy = OnlineLinear(4, 3)
    copy.load_state(probe.state())
    torch.testing.assert_close(copy.linear.weight, probe.linear.weight)
    probe.step(features, labels)
    copy.step(features, labels)  # the restored momentum gives the same next step
    torch.testing.assert_close(copy.linear.weight, probe.linear.weight)
    expected = 100 * (probe.linear(features).argmax(dim=1) == labels).float().mean().item()
    assert probe.top1(features, labels) == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least 2 classes"):
        OnlineLinear(4, 1)


def _series(run: Path, column: str) -> list[float]:
    (path,) = (run / "csv").glob("version_*/metrics.csv")
    with path.open() as file:
        return [float(row[column]) for row in csv.DictReader(file) if row.get(column)]


def test_probe_changes_neither_the_losses_nor_the_weights_of_pre_training(
    cifar10_archive: Path, tmp_path: Path
) -> None:
    results = {}
    for probe in (True, False):
        config = load_config(
            "configs/quickstart.yaml",
            [
                "--model.width=8",
                f"--data.data_dir={cifar10_archive}",
                "--data.batch_size=16",
                "--data.limit=64",
                "--trainer.max_steps=4",
                "--trainer.log_every_n_steps=1",
                "--trainer.progress_bar=false",
                "--trainer.cpu_threads=1",
                "--trainer.last_every_n_steps=0",
                f"--trainer.online_linear={probe}",
                f"--output_dir={tmp_path / str(probe)}",
            ],
        )
        results[probe] = pretrain(config)
    on, off = tmp_path / "True", tmp_path / "False"
    assert _series(on, "train/loss") == _series(off, "train/loss")
    assert len(_series(on, "train/online_linear_top1")) == 4 and not _series(off, "train/online_linear_top1")
    a = torch.load(on / "checkpoints/last.ckpt", weights_only=True)
    b = torch.load(off / "checkpoints/last.ckpt", weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert "online_linear" in a and "online_linear" not in b
    assert results[True].online_linear is not None and results[False].online_linear is None
    assert results[True].online_linear.linear.weight.abs().sum() > 0
