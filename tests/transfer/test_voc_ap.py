"""VOC AP against independent computations: precision / recall enumerated by hand, and a devkit-style reference.

The reference (``_devkit_ap``) follows detectron2's ``voc_eval`` in its own conventions: boxes as 1-based
inclusive pixel indices with the ``+1`` in widths, one class at a time, plain loops.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

from hallucinator.transfer import coco_eval, datasets, voc07_ap, voc_ap, voc_metrics


def eleven_point(precision: list[float], recall: list[float]) -> float:
    """VOC07 by its definition: the mean over t = 0, 0.1, .., 1 of the best precision at recall >= t, in percent."""
    return 100 * sum(max([p for p, r in zip(precision, recall) if r >= t / 10], default=0.0) for t in range(11)) / 11


def _gt(image_id, boxes, labels, difficult=None) -> dict:
    item = {"image_id": image_id, "boxes": boxes, "labels": labels}
    if difficult is not None:
        item["difficult"] = difficult
    return item


def _det(image_id, boxes, scores, labels) -> dict:
    return {"image_id": image_id, "boxes": boxes, "scores": scores, "labels": labels}


A, B, C = [0, 0, 10, 10], [20, 20, 30, 30], [40, 0, 50, 10]
NOWHERE = [60, 60, 70, 70]


def test_eleven_point_ap_by_hand():
    # 3 boxes of class 1; ranked: hit, miss, hit, duplicate, hit
    gt = [_gt("a", [A, B], [1, 1]), _gt("b", [C], [1])]
    dets = [
        _det("a", [A, NOWHERE, A, B], [0.9, 0.8, 0.6, 0.5], [1, 1, 1, 1]),
        _det("b", [C], [0.7], [1]),
    ]
    precision = [1, 1 / 2, 2 / 3, 2 / 4, 3 / 5]
    recall = [1 / 3, 1 / 3, 2 / 3, 2 / 3, 3 / 3]
    result = voc07_ap(dets, gt)
    assert result.per_class[1] == pytest.approx(eleven_point(precision, recall))
    assert result.per_class[1] == pytest.approx(100 * (4 * 1 + 3 * (2 / 3) + 4 * (3 / 5)) / 11)  # = 76.36
    # VOC2010's area under the precision envelope: 1/3 at 1, 1/3 at 2/3, 1/3 at 3/5
    area = voc07_ap(dets, gt, use_07_metric=False).per_class[1]
    assert area == pytest.approx(100 * (1 + 2 / 3 + 3 / 5) / 3)


def test_ties_keep_the_input_order():
    gt = [_gt("a", [A], [1]), _gt("b", [B], [1])]
    miss_first = [_det("a", [NOWHERE], [0.8], [1]), _det("b", [B], [0.8], [1])]
    assert voc07_ap(miss_first, gt).per_class[1] == pytest.approx(eleven_point([0, 1 / 2], [0, 1 / 2]))
    hit_first = miss_first[::-1]
    assert voc07_ap(hit_first, gt).per_class[1] == pytest.approx(eleven_point([1, 1 / 2], [1 / 2, 1 / 2]))
    # within an image too
    within = [_det("a", [NOWHERE, A], [0.8, 0.8], [1, 1])]
    assert voc07_ap(within, gt).per_class[1] == pytest.approx(eleven_point([0, 1 / 2], [0, 1 / 2]))


def test_difficult_boxes_are_neither_counted_nor_penalised():
    gt = [_gt("a", [A, B], [1, 1], difficult=[False, True])]
    # two hits on the difficult box (ignored, no duplicate either), a hit on A, a miss
    dets = [_det("a", [B, B, A, NOWHERE], [0.9, 0.8, 0.7, 0.6], [1, 1, 1, 1])]
    ranked = voc07_ap(dets, gt).per_class[1]
    assert ranked == pytest.approx(eleven_point([0, 0, 1, 1 / 2], [0, 0, 1, 1])) == pytest.approx(100)
    # the same boxes, none difficult: the second hit on B is a duplicate and recall counts 2 boxes
    plain = voc07_ap(dets, [_gt("a", [A, B], [1, 1])]).per_class[1]
    assert plain == pytest.approx(eleven_point([1, 1 / 2, 2 / 3, 2 / 4], [1 / 2, 1 / 2, 1, 1]))
    # a class whose only box is difficult has no AP
    only_difficult = voc07_ap([], [_gt("a", [A], [4], difficult=[True])])
    assert math.isnan(only_difficult.per_class[4]) and math.isnan(only_difficult.mAP)


def test_the_best_overlap_decides_even_when_taken():
    # the second detection overlaps A best (taken) and B a little: a false positive, not a late match of B
    wide = [5, 0, 25, 25]
    gt = [_gt("a", [A, [5, 15, 30, 30]], [1, 1])]
    ious = voc_ap._iou(np.array(wide, float), np.array([A, [5, 15, 30, 30]], float))
    assert ious[0] < ious[1]  # wide overlaps the second box best
    dets = [_det("a", [[5, 15, 30, 30], wide], [0.9, 0.8], [1, 1])]
    assert voc07_ap(dets, gt, iou_threshold=0.1).per_class[1] == pytest.approx(eleven_point([1, 1 / 2], [1 / 2, 1 / 2]))


def test_classes_without_ground_truth_are_left_out_of_the_mean():
    gt = [_gt("a", [A, B], [1, 2])]
    dets = [_det("a", [A, C, NOWHERE], [0.9, 0.8, 0.7], [1, 3, 3])]  # class 2 missed, class 3 has no ground truth
    result = voc07_ap(dets, gt)
    assert result.per_class[1] == pytest.approx(100) and result.per_class[2] == 0
    assert math.isnan(result.per_class[3]) and result.mAP == pytest.approx(50)
    assert result.named(["one", "two", "three"])["two"] == 0


def test_perfect_and_no_detections():
    gt = [_gt(0, [A, B], [1, 2]), _gt(1, [C], [2]), _gt(2, [], [])]
    perfect = [{**item, "scores": [1.0] * len(item["labels"])} for item in gt]
    assert voc07_ap(perfect, gt).mAP == pytest.approx(100)
    assert voc_metrics(perfect, gt) == pytest.approx({"AP": 100, "AP50": 100, "AP75": 100})
    assert voc07_ap([], gt).mAP == 0 and voc07_ap([], gt).per_class == {1: 0, 2: 0}
    assert voc_metrics([], gt) == {"AP": 0, "AP50": 0, "AP75": 0}


def test_iou_must_exceed_the_threshold_and_ap_averages_ten_thresholds():
    gt = [_gt("a", [A], [1])]
    half = [_det("a", [[0, 0, 10, 5]], [1.0], [1])]  # IoU exactly 0.5: not above it
    assert voc07_ap(half, gt).mAP == 0
    sixty = [_det("a", [[0, 0, 10, 6]], [1.0], [1])]  # IoU 0.6: a hit at 0.50 and 0.55, a miss from 0.60 on
    assert voc_metrics(sixty, gt) == pytest.approx({"AP": 20, "AP50": 100, "AP75": 0})


def test_tensors_and_a_dataset_s_targets_are_accepted(small_set):
    from hallucinator.transfer import VOCDetection

    truth = VOCDetection(small_set.root, image_set="test", classes=small_set.classes).targets()
    perfect = [{**t, "scores": torch.ones(len(t["labels"]))} for t in truth]
    assert voc07_ap(perfect, truth).mAP == pytest.approx(100)
    shifted = [{**p, "boxes": p["boxes"] + 4} for p in perfect]  # 32 px or larger objects moved by 4 px
    assert 0 < voc_metrics(shifted, truth)["AP"] < voc_metrics(shifted, truth)["AP50"] == pytest.approx(100)


def test_unknown_images_and_mismatched_lengths_are_errors():
    gt = [_gt("a", [A], [1])]
    with pytest.raises(ValueError, match="detections name image 'b', which the ground truth does not have"):
        voc07_ap([_det("b", [A], [1.0], [1])], gt)
    with pytest.raises(ValueError, match="1 boxes, 2 labels and 1 scores"):
        voc07_ap([_det("a", [A], [1.0], [1, 1])], gt)
    with pytest.raises(ValueError, match="lists image 'a' twice"):
        voc07_ap([], gt + gt)


def _devkit_ap(dets: list[dict], gts: list[dict], label: int, threshold: float, use_07: bool) -> float:
    """One class's AP as detectron2's voc_eval computes it, in 1-based inclusive pixel coordinates."""
    records = {}
    positives = 0
    for g in gts:
        chosen = [k for k, lab in enumerate(g["labels"]) if lab == label]
        boxes = [[g["boxes"][k][0] + 1, g["boxes"][k][1] + 1, g["boxes"][k][2], g["boxes"][k][3]] for k in chosen]
        difficult = [g["difficult"][k] for k in chosen]
        records[g["image_id"]] = {"boxes": boxes, "difficult": difficult, "taken": [False] * len(chosen)}
        positives += sum(not d for d in difficult)
    found = [
        (score, d["image_id"], [box[0] + 1, box[1] + 1, box[2], box[3]])
        for d in dets
        for box, score, lab in zip(d["boxes"], d["scores"], d["labels"])
        if lab == label
    ]
    found.sort(key=lambda f: -f[0])
    tp, fp = [], []
    for _, image_id, bb in found:
        record, best, best_iou = records[image_id], -1, -math.inf
        for k, g in enumerate(record["boxes"]):
            iw = max(min(bb[2], g[2]) - max(bb[0], g[0]) + 1.0, 0.0)
            ih = max(min(bb[3], g[3]) - max(bb[1], g[1]) + 1.0, 0.0)
            union = (bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0) + (g[2] - g[0] + 1.0) * (g[3] - g[1] + 1.0) - iw * ih
            if iw * ih / union > best_iou:
                best, best_iou = k, iw * ih / union
        hit = miss = 0
        if best_iou > threshold:
            if not record["difficult"][best]:
                if not record["taken"][best]:
                    hit, record["taken"][best] = 1, True
                else:
                    miss = 1
        else:
            miss = 1
        tp.append(hit)
        fp.append(miss)
    hits, misses = np.cumsum(tp), np.cumsum(fp)
    recall = hits / positives
    precision = hits / np.maximum(hits + misses, np.finfo(np.float64).eps)
    if use_07:
        return eleven_point(list(precision), list(recall))
    ap, envelope = 0.0, 0.0
    points = sorted(zip(recall, precision))
    # area under the envelope: walk the recall steps, each at the best precision from there on
    for i, (r, _) in enumerate(points):
        envelope = max(p for _, p in points[i:])
        previous = points[i - 1][0] if i else 0.0
        ap += (r - previous) * envelope
    return 100 * ap


@pytest.mark.parametrize("seed", range(4))
def test_random_detections_agree_with_the_devkit_reference(seed):
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for image in range(12):
        k = int(rng.integers(0, 5))
        corner = rng.uniform(0, 80, (k, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(8, 40, (k, 2))], axis=1)
        labels = rng.integers(1, 4, k)
        gts.append(_gt(image, boxes.tolist(), labels.tolist(), (rng.random(k) < 0.2).tolist()))
        # detections: jittered copies of most boxes (hits and near misses), random boxes, a duplicate of the first
        kept = rng.random(k) < 0.8
        copies = boxes[kept] + rng.normal(0, 3, (int(kept.sum()), 4))
        corner = rng.uniform(0, 100, (int(rng.integers(0, 3)), 2))
        noise = np.concatenate([corner, corner + rng.uniform(8, 40, (len(corner), 2))], axis=1)
        found = np.concatenate([copies, noise, boxes[:1] + 1.0])
        found[:, 2:] = np.maximum(found[:, 2:], found[:, :2] + 1)
        found_labels = np.concatenate([labels[kept], rng.integers(1, 4, len(noise)), labels[:1]])
        dets.append(_det(image, found.tolist(), rng.random(len(found)).tolist(), found_labels.tolist()))
    for threshold in (0.3, 0.5, 0.7):
        for use_07 in (True, False):
            result = voc07_ap(dets, gts, iou_threshold=threshold, use_07_metric=use_07)
            for label in (1, 2, 3):
                assert result.per_class[label] == pytest.approx(_devkit_ap(dets, gts, label, threshold, use_07))
            assert result.mAP == pytest.approx(np.mean([result.per_class[label] for label in (1, 2, 3)]))
    assert 5 < voc07_ap(dets, gts).mAP < 95  # neither trivial case


@pytest.mark.parametrize("module", [voc_ap, datasets, coco_eval], ids=lambda module: module.__name__)
def test_docstring_examples_run(module) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0 and result.failed == 0
