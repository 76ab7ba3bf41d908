"""A checkpoint's backbone as a folder in the Hugging Face convention, ready for ``huggingface_hub.upload_folder``.

- ``config.json``: the backbone (name, width, stem, image size, ``num_features``), the input it takes
  (:func:`hallucinator.export.input_spec`), the method and its hyper-parameters, the Hallucinator's
  settings, the training summary and the run's evaluation figures (``RUN/evaluation.json``, when the
  checkpoint lies in ``RUN/checkpoints/``), and the run's config less its paths. Where timm builds the
  network exactly (the ViTs, width-64 ImageNet-stem ResNets) also timm's own fields (``architecture``,
  ``num_classes``, ``model_args``, ``pretrained_cfg``), so ``timm.create_model("local-dir:DIR", pretrained=True)``
  (or ``"hf-hub:USER/REPO"`` once uploaded) loads the folder as it is.
- ``model.safetensors``: the backbone's weights under torchvision's names (ResNets) or timm's (ViTs, ``timm:``).
- ``README.md``: a model card: what the encoder is, how it was trained, its figures, how to load it.

:func:`load_folder` (``hallucinator.load_backbone(DIR)``) loads it back, strictly.

The three files are written here rather than through ``huggingface_hub``'s ``ModelHubMixin``: the mixin saves
the state dict of the class that inherits it (a wrapper's keys, ``backbone.conv1.weight``, which neither
torchvision nor timm reads), rebuilds from that class's ``__init__`` arguments, and loads with ``strict=False``
by default (a file of another network loads without an error). Overriding its saving and loading would leave
only its upload, which ``huggingface_hub.upload_folder(repo_id=..., folder_path=DIR)`` does for this folder.

Example:
    >>> export_hf("runs/quickstart/checkpoints/last.ckpt", "exports/quickstart")
    >>> backbone = hallucinator.load_backbone("exports/quickstart")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hallucinator import __version__, backbones, methods
from hallucinator.export import input_spec, timm_counterpart, timm_state_dict, torchvision_state_dict

if TYPE_CHECKING:
    from hallucinator.engine.config import Config

CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"
EVALUATION_FILE = "evaluation.json"


def read_evaluation(checkpoint: str | Path) -> dict[str, Any]:
    """``RUN/evaluation.json`` of a checkpoint at ``RUN/checkpoints/*.ckpt`` (what ``pretrain`` and the evaluation
    commands record), or ``{}``. Read here: the export layer does not import ``hallucinator.evaluation``.

    Example:
        >>> read_evaluation("runs/quickstart/checkpoints/last.ckpt")["knn"]["top1"]
        41.2
    """
    checkpoint = Path(checkpoint).resolve()
    path = checkpoint.parent.parent / EVALUATION_FILE
    if checkpoint.parent.name != "checkpoints" or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); fix or delete it, then export again") from error
    return data if isinstance(data, dict) else {}


def _steps(checkpoint: str | Path) -> int | None:
    # mmap: the step counter is read without loading the weights
    step = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True).get("global_step")
    return int(step) if step is not None else None


def folder_config(config: Config, num_features: int, steps: int | None, evaluation: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` of the folder (see the module's docstring).

    Example:
        >>> backbone, config = hallucinator.engine.checkpoint.load_pretrained("runs/quickstart/checkpoints/last.ckpt")
        >>> folder_config(config, backbone.num_features, 4880, {})["key_names"]
        'torchvision'
    """
    from hallucinator.engine.config import to_dict

    model, data, spec = config.model, config.data, input_spec(config)
    everything = to_dict(config)
    # where the run ran (paths of one's own machine), not what it trained: left out of a file meant for sharing
    everything.pop("output_dir")
    for key in ("data_dir", "cache_dir"):
        everything["data"].pop(key)
    counterpart = timm_counterpart(
        model.backbone, width=model.width, cifar_stem=model.cifar_stem, image_size=spec["image_size"]
    )
    result: dict[str, Any] = {
        "library": "hallucinator",
        "hallucinator_version": __version__,
        "backbone": model.backbone,
        "width": model.width,
        "cifar_stem": model.cifar_stem,
        "image_size": spec["image_size"],
        "num_features": num_features,
        "key_names": "timm" if backbones.timm_spec(model.backbone) is not None else "torchvision",
        "input": spec,
        "method": model.method,
        "method_hparams": {**methods.METHODS[model.method].hparams, **model.hparams},
        "hallucinator": everything["hallucinator"],
        "training": {
            "dataset": data.dataset,
            "batch_size": data.batch_size,
            "crop_size": data.training_crop_size,
            "optimizer": config.optimizer.name,
            "lr": config.lr(),
            "max_epochs": config.trainer.max_epochs,
            "max_steps": config.trainer.max_steps,
            "seed": config.seed,
            "steps": steps,
            **evaluation.get("train", {}),
        },
        "evaluation": {key: value for key, value in evaluation.items() if key != "train"},
        "config": everything,
    }
    if counterpart is not None:
        architecture, model_args = counterpart
        result.update(
            architecture=architecture,
            num_classes=0,
            model_args=model_args,
            pretrained_cfg={
                "input_size": [3, spec["image_size"], spec["image_size"]],
                "mean": spec["mean"],
                "std": spec["std"],
                "crop_pct": spec["crop_pct"],
                "crop_mode": "center",
                "interpolation": "bilinear",
                "num_classes": 0,
            },
        )
    return result


def loading_code(folder: str | Path, config: dict[str, Any]) -> dict[str, list[str]]:
    """``{library: Python statements}`` that load the folder ``folder`` whose ``config.json`` is ``config`` in eval
    mode: with hallucinator (always), with timm (where it builds the network), with torchvision (a width-64 ResNet).

    Example:
        >>> loading_code("exports/r18", config)["hallucinator"]
        ['import hallucinator', "backbone = hallucinator.load_backbone('exports/r18')"]
    """
    folder = str(folder)
    weights = str(Path(folder) / WEIGHTS_FILE)
    code = {"hallucinator": ["import hallucinator", f"backbone = hallucinator.load_backbone({folder!r})"]}
    if "architecture" in config:
        extra = "".join(f", {key}={value!r}" for key, value in config["model_args"].items())
        code["timm"] = ["import timm", f"model = timm.create_model({'local-dir:' + folder!r}, pretrained=True).eval()"]
        code["timm, from the weights file"] = [
            "import timm",
            f"model = timm.create_model({config['architecture']!r}, pretrained=True, "
            f"pretrained_cfg_overlay=dict(file={weights!r}), num_classes=0{extra}).eval()",
        ]
        if config["backbone"] in backbones.RESNETS:
            code["torchvision"] = [
                "import safetensors.torch, torch, torchvision",
                f"model = torchvision.models.{config['backbone']}()",
                f"model.load_state_dict(safetensors.torch.load_file({weights!r}), strict=False)",
                "model.fc = torch.nn.Identity()",
                "model.eval()",
            ]
    return code


def _figures(values: dict[str, Any]) -> str:
    return ", ".join(
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}" for key, value in values.items()
    )


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def model_card(folder: str | Path, config: dict[str, Any]) -> str:
    """The ``README.md`` of the folder: YAML front matter for the Hub, then what the encoder is, its training,
    its evaluation figures and the code that loads it (every block runs as written).

    Example:
        >>> (Path("exports/r18") / "README.md").write_text(model_card("exports/r18", config))
    """
    spec, training, h = config["input"], config["training"], config["hallucinator"]
    size, dataset = spec["image_size"], training["dataset"]
    network = config["backbone"]
    if config["backbone"] in backbones.RESNETS:
        network += f" (width {config['width']}, {'CIFAR' if config['cifar_stem'] else 'ImageNet'} stem)"
    elif "architecture" in config:
        network += f" (timm's {config['architecture']}, {_figures(config['model_args'])})"
    method = config["method"] + (" + Hallucinator" if h["enabled"] else "")
    front = ["---", "pipeline_tag: image-feature-extraction"]
    if "architecture" in config:
        front.append("library_name: timm")
    front += ["tags:", *(f"- {tag}" for tag in ("hallucinator", "self-supervised-learning", config["method"])), "---"]
    lines = [
        *front,
        "",
        f"# {network}, pre-trained with {method} on {dataset}",
        "",
        f"A self-supervised image encoder, exported by `hallucinator export --format hf` (hallucinator "
        f"{config['hallucinator_version']}; the Hallucinator, ICCV 2023, makes harder positive pairs in feature "
        f"space). It maps an RGB image of {size} x {size} px, normalised as below, to a {config['num_features']}-d "
        "feature vector: the backbone alone, without the method's projection head or a classifier, for kNN "
        "retrieval, linear probes or fine-tuning.",
        "",
        "## Input",
        "",
        f"float32 `N x 3 x {size} x {size}` ({spec['layout']}, {spec['channels']}): {spec['preprocessing']}.",
        f"Mean {spec['mean']}, std {spec['std']}.",
        "",
        "## Training",
        "",
        "| | |",
        "| --- | --- |",
        f"| method | {config['method']} ({_figures(config['method_hparams'])}) |",
        f"| Hallucinator | {_figures({k: v for k, v in h.items() if k != 'enabled'}) if h['enabled'] else 'off'} |",
        f"| data | {dataset}, {size} px (training crops {training['crop_size'] or size} px), batch {training['batch_size']} |",
        f"| optimiser | {training['optimizer']}, lr {training['lr']:.4g} |",
    ]
    schedule = f"{training['max_steps']} steps" if training["max_steps"] > 0 else f"{training['max_epochs']} epochs"
    lines.append(f"| schedule | {schedule}, seed {training['seed']} |")
    if training.get("steps") is not None:
        lines.append(
            f"| steps trained | {training['steps']}"
            + (f" (epochs: {training['epochs']:.4g})" if "epochs" in training else "")
            + " |"
        )
    if "seconds" in training:
        lines.append(f"| wall time | {_duration(training['seconds'])} |")
    if "images_per_second" in training:
        lines.append(f"| throughput | {training['images_per_second']:.4g} pairs/s |")
    shown = {"dataset", "batch_size", "crop_size", "optimizer", "lr", "max_epochs", "max_steps", "seed", "steps"}
    shown |= {"epochs", "seconds", "images_per_second"}
    for key, value in training.items():  # whatever else the run recorded (e.g. the machine it ran on)
        if key not in shown:
            lines.append(f"| {key} | {value} |")
    lines += ["", "The whole training config is `config.json`'s `config`.", "", "## Evaluation", ""]
    if config["evaluation"]:
        lines += ["| protocol | figures |", "| --- | --- |"]
        lines += [f"| {name} | {_figures(figures)} |" for name, figures in config["evaluation"].items()]
        lines += [
            "",
            "As `hallucinator knn`, `linear` and `metrics` recorded them on the checkpoint (accuracies in percent).",
        ]
    else:
        lines.append(
            "None recorded: the run directory had no `evaluation.json` (`hallucinator knn CKPT` and "
            "`hallucinator linear CKPT` write it; export again afterwards)."
        )
    code = loading_code(folder, config)
    lines += [
        "",
        "## How to load it",
        "",
        "With hallucinator (the library that trained it), on a uint8 RGB batch:",
        "",
        "```python",
        "import torch",
        "from hallucinator.data import eval_transform",
        *code.pop("hallucinator"),
        "",
        f"normalise = eval_transform({dataset!r}, {size})",
        f"images = torch.randint(0, 256, (4, 3, {size}, {size}), dtype=torch.uint8)  # your images",
        "with torch.no_grad():",
        f"    features = backbone(normalise(images))  # (4, {config['num_features']})",
        "```",
    ]
    for name, statements in code.items():
        lines += ["", f"With {name}:", "", "```python", *statements, "```"]
    return "\n".join(lines) + "\n"


def export_hf(checkpoint: str | Path, out: str | Path) -> Path:
    """Writes the folder ``out`` (``config.json``, ``model.safetensors``, ``README.md``) for the checkpoint's backbone.

    Example:
        >>> export_hf("runs/vit/checkpoints/last.ckpt", "exports/vit")
        >>> timm.create_model("local-dir:exports/vit", pretrained=True)
    """
    from safetensors.torch import save_file

    from hallucinator.engine.checkpoint import load_pretrained

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; --format hf writes a folder: pass a directory path")
    backbone, config = load_pretrained(checkpoint)
    state, name = backbone.state_dict(), config.model.backbone
    image_size = input_spec(config)["image_size"]
    if backbones.timm_spec(name) is not None:
        weights = timm_state_dict(state, name, image_size)
    else:
        weights = torchvision_state_dict(state)
    num_features = backbone.num_features
    assert isinstance(num_features, int)  # backbones.build sets it on every backbone
    folder = folder_config(config, num_features, _steps(checkpoint), read_evaluation(checkpoint))
    out.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share memory: clone; "format": "pt" is what Hugging Face's loaders look for
    save_file(
        {key: value.clone() for key, value in weights.items()}, str(out / WEIGHTS_FILE), metadata={"format": "pt"}
    )
    (out / CONFIG_FILE).write_text(json.dumps(folder, indent=2) + "\n")
    (out / CARD_FILE).write_text(model_card(out, folder))
    return out


def load_folder(folder: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The backbone of a folder written by :func:`export_hf`, in eval mode, its weights loaded strictly.

    Example:
        >>> backbone = load_folder("exports/quickstart")
        >>> backbone(normalised).shape  # (N, backbone.num_features)
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder} has no {path.name}: pass a folder written by `hallucinator export CKPT DIR --format hf`, "
                "or a checkpoint file"
            )
    try:
        config = json.loads(config_path.read_text())
        name, width, cifar_stem, size = config["backbone"], config["width"], config["cifar_stem"], config["image_size"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(
            f"{config_path} is not the config of a hallucinator export ({type(error).__name__}: {error}); "
            "export the checkpoint again with --format hf"
        ) from error
    backbone = backbones.build(name, cifar_stem=cifar_stem, width=width, image_size=size)
    try:
        backbone.load_state_dict(load_file(weights_path, device=str(map_location)))
    except RuntimeError as error:
        raise ValueError(
            f"{weights_path} does not fit the {name} (width {width}, cifar_stem {cifar_stem}) of its config.json; "
            "export the checkpoint again with --format hf"
        ) from error
    return backbone.eval()
