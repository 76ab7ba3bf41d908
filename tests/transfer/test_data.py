"""The fine-tuning data (hallucinator.transfer.data): splits read from the folder, flips, training targets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hallucinator.transfer.config import load_transfer_config
from hallucinator.transfer.data import hflip, resolved_data, training_target


def test_splits_and_years_are_read_from_the_folder(small_set, tmp_path: Path) -> None:
    coco = resolved_data(
        load_transfer_config(None, ["--model.checkpoint=x", f"--data.data_dir={small_set.root}", "--data.format=coco"])
    )
    assert (coco.data.train_split, coco.data.test_split) == ("train", "val")  # the small set's names
    voc = resolved_data(load_transfer_config(None, ["--model.checkpoint=x", f"--data.data_dir={small_set.root}"]))
    assert (voc.data.train_split, voc.data.test_split, voc.data.voc_years) == ("trainval", "test", ["2007"])
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2017.json").write_text("{}")
    real = resolved_data(
        load_transfer_config(None, ["--model.checkpoint=x", f"--data.data_dir={tmp_path}", "--data.format=coco"])
    )
    assert (real.data.train_split, real.data.test_split) == ("train2017", "val2017")  # COCO's, named by the error
    with pytest.raises(ValueError, match="has COCO's layout .* --format coco"):
        resolved_data(load_transfer_config(None, ["--model.checkpoint=x", f"--data.data_dir={tmp_path}"]))


def test_hflip_mirrors_image_boxes_and_masks_together() -> None:
    image = torch.zeros(3, 10, 20, dtype=torch.uint8)
    image[:, 2:5, 3:9] = 255  # an object at x 3..9, y 2..5 (continuous coordinates)
    masks = (image[:1] > 0).to(torch.uint8)
    target = {"boxes": torch.tensor([[3.0, 2.0, 9.0, 5.0]]), "labels": torch.tensor([1]), "masks": masks}
    flipped_image, flipped = hflip(image, target)
    columns = flipped_image[0].nonzero()[:, 1]
    assert flipped["boxes"].tolist() == [[20 - 9.0, 2.0, 20 - 3.0, 5.0]]
    assert (columns.min().item(), columns.max().item() + 1) == (20 - 9, 20 - 3)  # the pixels moved with the box
    assert torch.equal(flipped["masks"][0], flipped_image[0] > 0) and torch.equal(flipped["labels"], target["labels"])


def test_crowd_objects_are_left_out_of_training_targets() -> None:
    target = {
        "boxes": torch.arange(12.0).reshape(3, 4),
        "labels": torch.tensor([1, 2, 3]),
        "iscrowd": torch.tensor([0, 1, 0]),
        "masks": torch.ones(3, 2, 2, dtype=torch.uint8),
        "image_id": 5,
    }
    kept = training_target(target, masks=True)
    assert kept["labels"].tolist() == [1, 3] and kept["boxes"].tolist() == [[0, 1, 2, 3], [8, 9, 10, 11]]
    assert set(kept) == {"boxes", "labels", "masks"} and len(kept["masks"]) == 2
