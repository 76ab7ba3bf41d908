"""``--format onnx``: onnxruntime computes what PyTorch computes, on real CIFAR-10 images, at any batch size."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from hallucinator.cli import main
from hallucinator.data import eval_transform
from hallucinator.export import export_checkpoint
from hallucinator.export.onnx import export_onnx, load_encoder
from tests.evaluation.conftest import fabricate_checkpoint
from tests.export.conftest import method_checkpoint, printed_command

CIFAR10_MEAN, CIFAR10_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


@pytest.fixture(scope="module")
def images(cifar10_subset) -> torch.Tensor:
    """One real image of each class, normalised as the run's evaluation does."""
    pixels, labels = cifar10_subset
    first = torch.stack([torch.nonzero(labels == c)[0, 0] for c in range(10)])
    return eval_transform("cifar10", 32)(pixels[first])


def _session(path):
    onnxruntime = pytest.importorskip("onnxruntime")
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("backbone", ["resnet18", "vit_tiny"])
def test_onnxruntime_equals_pytorch_on_real_images_at_two_batch_sizes(tmp_path, images, backbone):
    for package in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(package)
    import onnx

    checkpoint = method_checkpoint(tmp_path / "run", backbone=backbone, width=16 if backbone == "resnet18" else 64)
    result = export_onnx(checkpoint, tmp_path / "encoder.onnx")
    encoder, _ = load_encoder(checkpoint)
    session = _session(result.path)
    for batch in (images[:1], images):  # 1 and 10, neither the traced batch of 2: the batch axis is dynamic
        (output,) = session.run(None, {"images": batch.numpy()})
        with torch.no_grad():
            expected = encoder(batch)
        assert output.shape == (len(batch), encoder.num_features)
        torch.testing.assert_close(torch.from_numpy(output), expected, atol=1e-4, rtol=0)
    assert result.max_difference < 1e-4
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata == result.metadata
    assert json.loads(metadata["mean"]) == CIFAR10_MEAN and json.loads(metadata["std"]) == CIFAR10_STD
    assert (metadata["image_size"], metadata["input_layout"], metadata["input_channels"]) == ("32", "NCHW", "RGB")
    assert metadata["input_shape"] == "N x 3 x 32 x 32" and metadata["output_shape"] == f"N x {encoder.num_features}"
    assert (metadata["backbone"], metadata["part"], metadata["dataset"]) == (backbone, "backbone", "cifar10")
    graph = onnx.load(str(result.path)).graph  # one self-contained file: no external weights beside it
    assert [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == ["batch", 3, 32, 32]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.onnx", "run"]


def test_the_cli_exports_the_projector_and_its_printed_command_runs(tmp_path, capsys, images):
    for package in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(package)
    checkpoint = method_checkpoint(tmp_path / "run")  # SimCLR, ResNet-18 width 16 CIFAR stem
    out = tmp_path / "projector.onnx"
    assert main(["export", str(checkpoint), str(out), "--format", "onnx", "--part", "projector"]) == 0
    printed = capsys.readouterr().out
    assert f"  mean: {json.dumps(CIFAR10_MEAN)}" in printed and "  part: projector" in printed
    assert "  output_shape: N x 128" in printed  # SimCLR's 128-d projection
    namespace = {"images": images.numpy()}
    exec(printed_command(printed, "run it with: "), namespace)
    encoder, _ = load_encoder(checkpoint, "projector")
    with torch.no_grad():
        expected = encoder(images)
    torch.testing.assert_close(torch.from_numpy(namespace["features"]), expected, atol=1e-4, rtol=0)


def test_a_missing_onnx_package_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    checkpoint = fabricate_checkpoint(tmp_path / "run")
    for package in ("onnx", "onnxscript", "onnxruntime"):
        monkeypatch.setitem(sys.modules, package, None)  # `import onnx` now raises ImportError, installed or not
    message = "--format onnx needs the onnx package: pip install 'hallucinator[onnx]'"
    with pytest.raises(ModuleNotFoundError) as error:
        export_checkpoint(checkpoint, tmp_path / "encoder.onnx", "onnx")
    assert str(error.value) == message
    assert main(["export", str(checkpoint), str(tmp_path / "encoder.onnx"), "--format", "onnx"]) == 2
    assert capsys.readouterr().err == f"hallucinator export: {message}\n"
    assert not (tmp_path / "encoder.onnx").exists()


def test_a_method_without_a_projector_is_refused(tmp_path):
    checkpoint = method_checkpoint(tmp_path / "run", method="dino", hparams={"out_dim": 64, "hidden_dim": 64})
    with pytest.raises(ValueError, match="method dino has no `projector`.*export --part backbone"):
        load_encoder(checkpoint, "projector")
