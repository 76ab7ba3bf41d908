from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from hallucinator.evaluation.knn import knn_classify
from hallucinator.evaluation.metrics import uniformity_metrics
from hallucinator.evaluation.monitor import KNNMonitor
from hallucinator.evaluation.plots import metric_series, read_metrics


class TinyModule(pl.LightningModule):
    """Mimics the engine's module: the encoder lives at ``.method.backbone``."""

    def __init__(self) -> None:
        super().__init__()
        self.method = nn.Module()
        self.method.backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 6))

    def training_step(self, batch, batch_idx):
        return self.method.backbone(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        images = torch.randn(16, 3, 2, 2)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=8)


def images_and_labels(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 2, 2), dtype=torch.uint8, generator=generator), torch.arange(n) % 3


def test_monitor_logs_knn_of_the_module_backbone(tmp_path):
    (train_x, train_y), (test_x, test_y) = images_and_labels(60, 0), images_and_labels(30, 1)
    monitor = KNNMonitor(train_x, train_y, test_x, test_y, every_n_epochs=2, k=10, batch_size=7)
    module = TinyModule()
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=CSVLogger(tmp_path, name="csv", version=""),
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(module)
    # after epochs 2 and 3 (the last); computed independently from the final backbone
    assert module.method.backbone.training  # the monitor's eval mode was undone
    backbone = module.method.backbone.eval()
    with torch.no_grad():
        train_f, test_f = backbone(train_x.float() / 255), backbone(test_x.float() / 255)
    expected = knn_classify(train_f, train_y, test_f, test_y, k=10)
    assert monitor.last.top1 == pytest.approx(expected.top1)
    assert trainer.callback_metrics["knn_top1"].item() == pytest.approx(expected.top1)
    assert trainer.callback_metrics["g2"].item() == pytest.approx(uniformity_metrics(test_f)["g2"], rel=1e-5)
    epochs, values = metric_series(read_metrics(tmp_path / "csv" / "metrics.csv"), "knn_top1")
    assert len(values) == 2 and epochs[-1] == pytest.approx(3.0) and epochs[0] == pytest.approx(2.0)


def test_monitor_errors():
    images, labels = images_and_labels(4, 0)
    with pytest.raises(ValueError, match="every_n_epochs"):
        KNNMonitor(images, labels, images, labels, every_n_epochs=0)
