"""The final evaluation (hallucinator.transfer.evaluation): perfect and empty predictions, VOC's difficult objects."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from hallucinator.transfer import CocoDetection, VOCDetection
from hallucinator.transfer.evaluation import evaluate


class Oracle(nn.Module):
    """A stand-in detector answering each image with the given outputs, in order."""

    def __init__(self, outputs: list[dict]) -> None:
        super().__init__()
        self.transform = SimpleNamespace(min_size=(96,))
        self.outputs = iter(outputs)

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        return [next(self.outputs) for _ in images]


def _answers(targets: list[dict], masks: list[torch.Tensor] | None = None, empty: bool = False) -> list[dict]:
    out = []
    for k, target in enumerate(targets):
        keep = slice(0, 0) if empty else slice(None)
        answer = {"boxes": target["boxes"][keep], "labels": target["labels"][keep]}
        answer["scores"] = torch.ones(len(answer["labels"]))
        if masks is not None:
            answer["masks"] = masks[k][keep][:, None].float()
        out.append(answer)
    return out


def test_evaluation_of_perfect_and_empty_predictions(small_set) -> None:
    coco = CocoDetection(small_set.root, "val", masks=True)
    targets = [coco[i][1] for i in range(len(coco))]
    for empty, expected in ((False, 100.0), (True, 0.0)):
        answers = _answers(targets, [t["masks"] for t in targets], empty)
        figures = evaluate(Oracle(answers), coco, "instance-segmentation", test_size=96, batch_size=4)
        assert set(figures) == {f"{kind}_{n}" for kind in ("bbox", "segm") for n in ("AP", "AP50", "AP75")}
        assert all(value == pytest.approx(expected) for value in figures.values()), figures
    voc = VOCDetection(small_set.root, image_set="test", classes=small_set.classes)
    for empty, expected in ((False, 100.0), (True, 0.0)):
        figures = evaluate(Oracle(_answers(voc.targets(), empty=empty)), voc, "detection", test_size=96, batch_size=4)
        names = {"bbox_AP", "bbox_AP50", "bbox_AP75", "voc_AP", "voc_AP50", "voc_AP75", "voc07_AP50"}
        assert set(figures) == names and all(v == pytest.approx(expected) for v in figures.values()), figures


def test_difficult_voc_objects_neither_count_nor_penalise(small_set, tmp_path: Path) -> None:
    root = tmp_path / "set"
    shutil.copytree(small_set.root / "VOC2007", root / "VOC2007")
    test_ids = (root / "VOC2007/ImageSets/Main/test.txt").read_text().split()
    path = root / "VOC2007/Annotations" / f"{test_ids[0]}.xml"
    tree = ET.parse(path)
    tree.getroot().find("object/difficult").text = "1"  # the first test image's first object
    tree.write(path)
    voc = VOCDetection(root, image_set="test", classes=small_set.classes)
    targets = voc.targets()
    assert targets[0]["difficult"].tolist()[0] and sum(int(t["difficult"].sum()) for t in targets) == 1
    found = _answers(targets)  # the difficult object detected too: not a false positive
    missed = _answers(targets)  # the difficult object missed: not a miss
    missed[0] = {key: value[1:] for key, value in missed[0].items()}
    for answers in (found, missed):
        figures = evaluate(Oracle(answers), voc, "detection", test_size=96)
        assert all(value == pytest.approx(100.0) for value in figures.values()), figures
