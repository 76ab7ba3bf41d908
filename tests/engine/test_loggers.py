"""``trainer.loggers``: one tiny run logs its config, its metrics and its final evaluation to CSV, TensorBoard,
W&B (offline) and MLflow (SQLite), each read back from what the logger wrote."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml

from hallucinator.cli import main
from hallucinator.engine.config import Config, TrainerConfig
from hallucinator.engine.loggers import build_loggers, check_logger_packages, log_final
from tests.cli.test_pretrain import metrics, pretrain

LOGGERS = "--trainer.loggers=[csv, tensorboard, wandb, mlflow]"


def wandb_records(run_file: Path) -> list:
    """The protobuf records of a W&B ``.wandb`` file: a ``:W&B`` header, then LevelDB's log format
    (32 KiB blocks of chunks, each ``crc32 | length | type``; a record may span chunks: 1 full, 2 first, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data, block = run_file.read_bytes(), 32768
    assert data[:4] == b":W&B"
    records, chunks, position = [], b"", 7
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a chunk header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunks += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def items(update) -> dict[str, object]:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in update}


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """W&B with no key and no mode (so the run decides to go offline), every W&B folder under ``tmp_path``."""
    pytest.importorskip("wandb", reason="pip install 'hallucinator[wandb]'")
    for variable in ("WANDB_MODE", "WANDB_API_KEY", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(variable, raising=False)
    for variable, folder in (("WANDB_DIR", "wandb"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config")):
        monkeypatch.setenv(variable, str(tmp_path / folder))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "wandb"


def test_a_run_logs_config_metrics_and_final_evaluation_to_every_logger(
    cifar10_archive: Path, tmp_path: Path, wandb_env: Path, monkeypatch: pytest.MonkeyPatch, capsys, caplog
) -> None:
    pytest.importorskip("mlflow", reason="pip install 'hallucinator[mlflow]'")
    import hallucinator.cli.pretrain as cli_pretrain

    original = cli_pretrain._knn_monitor  # the whole-test-set path (recorded and logged), on 200 images
    monkeypatch.setattr(cli_pretrain, "_knn_monitor", lambda config, limit=None: original(config, 200))
    run = tmp_path / "run"
    assert pretrain(cifar10_archive, run, LOGGERS) == 0
    assert "W&B logs offline (WANDB_MODE unset, no WANDB_API_KEY)" in capsys.readouterr().out + caplog.text
    config = yaml.safe_load((run / "config.yaml").read_text())  # the resolved config (image size, precision)
    evaluation = json.loads((run / "evaluation.json").read_text())
    final = {
        f"evaluation/{key}/{name}": value
        for key in ("knn", "online_linear")
        for name, value in evaluation[key].items()
        if not isinstance(value, str)
    }
    assert {"evaluation/knn/top1", "evaluation/knn/top5", "evaluation/online_linear/top1"} <= set(final)
    rows = metrics(run)
    losses = {int(row["step"]): float(row["train/loss"]) for row in rows if row["train/loss"]}
    assert sorted(losses) == [0, 1]
    assert {key: float(rows[-1][key]) for key in final} == pytest.approx(final)  # the CSV's last row
    assert (int(rows[-1]["step"]), rows[-1]["train/loss"]) == (2, "")

    # TensorBoard: the same scalars, read with TensorBoard's own reader
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run / "tensorboard")).Reload()
    assert {e.step: e.value for e in board.Scalars("train/loss")} == pytest.approx(losses)
    assert {key: board.Scalars(key)[-1].value for key in final} == pytest.approx(final)
    assert yaml.safe_load((run / "tensorboard" / "hparams.yaml").read_text())["config"] == config

    # W&B, offline: the run's records (config, per-step history, the final figures), as `wandb sync` would send
    (run_file,) = wandb_env.glob("wandb/offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    (header,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (header.display_name, header.project) == ("run", "hallucinator")
    logged_config = {}
    for record in records:
        if record.WhichOneof("record_type") == "config":
            logged_config.update(items(record.config.update))
    assert logged_config["config"] == config
    history = [items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    assert {int(h["trainer/global_step"]): h["train/loss"] for h in history if "train/loss" in h} == pytest.approx(
        losses
    )
    assert {key: history[-1][key] for key in final} == pytest.approx(final)
    assert any(r.WhichOneof("record_type") == "exit" for r in records)  # finished, not left open

    # MLflow, the default store (RUN/mlflow.db), through MLflow's client
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    (mlrun,) = client.search_runs([client.get_experiment_by_name("hallucinator").experiment_id])
    assert (mlrun.info.run_name, mlrun.info.status) == ("run", "FINISHED")
    params = mlrun.data.params
    assert params["config/model/method"] == config["model"]["method"] == "simclr"
    assert params["config/data/image_size"] == str(config["data"]["image_size"]) == "32"
    assert params["config/trainer/precision"] == config["trainer"]["precision"]
    assert params["config/trainer/loggers"] == str(config["trainer"]["loggers"])
    history = client.get_metric_history(mlrun.info.run_id, "train/loss")
    assert {m.step: m.value for m in history} == pytest.approx(losses)
    assert {key: mlrun.data.metrics[key] for key in final} == pytest.approx(final)


def test_mlflow_tracking_uri_is_overridable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """trainer.mlflow_tracking_uri sends the run elsewhere: here MLflow's file store (opted into, MLflow 3)."""
    pytest.importorskip("mlflow", reason="pip install 'hallucinator[mlflow]'")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = (tmp_path / "mlruns").as_uri()
    config = Config(trainer=TrainerConfig(loggers=["mlflow"], mlflow_tracking_uri=store, experiment="mine"))
    (logger,) = build_loggers(config, tmp_path / "run")
    logger.log_hyperparams({"config": {"seed": 3}})
    log_final([logger], {"evaluation/knn/top1": 42.5}, step=7)
    client = MlflowClient(store)
    (mlrun,) = client.search_runs([client.get_experiment_by_name("mine").experiment_id])
    assert (mlrun.data.params, mlrun.data.metrics, mlrun.info.status) == (
        {"config/seed": "3"},
        {"evaluation/knn/top1": 42.5},
        "FINISHED",
    )
    assert not (tmp_path / "run" / "mlflow.db").exists()


def test_unknown_logger_is_a_one_line_config_error(capsys) -> None:
    args = ["pretrain", "configs/base/small.yaml", "--trainer.loggers=[csv, neptune]", "--print-config"]
    assert main(args) == 2
    assert capsys.readouterr().err == (
        "hallucinator pretrain: config error: trainer.loggers: 'neptune' is not one of "
        "['csv', 'tensorboard', 'wandb', 'mlflow']\n"
    )


@pytest.mark.parametrize(
    ("logger", "uri", "absent", "named"),
    [
        ("wandb", None, "wandb", "wandb"),
        ("mlflow", None, "mlflow", "mlflow"),
        ("mlflow", None, "sqlalchemy", "sqlalchemy"),  # the default store is an SQLite database
        ("mlflow", "http://localhost:5000", "sqlalchemy", None),  # a tracking server needs no database package
    ],
)
def test_a_missing_package_names_the_extra_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, logger: str, uri: str | None, absent: str, named: str
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == absent else find_spec(name, *a))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = Config(output_dir=str(tmp_path), trainer=TrainerConfig(loggers=["csv", logger], mlflow_tracking_uri=uri))
    if named is None:
        check_logger_packages(config)
        return
    args = ["pretrain", "configs/base/small.yaml", "--output-dir", str(tmp_path), f"--trainer.loggers=[{logger}]"]
    assert main([*args, "--data-dir", str(tmp_path / "nowhere"), "--device=cpu", "--no-knn"]) == 2
    assert capsys.readouterr().err == (
        f"hallucinator pretrain: trainer.loggers: {logger} needs {named}: pip install 'hallucinator[{logger}]'\n"
    )
    assert not list(tmp_path.iterdir())  # refused before the data (which is missing here) and before any file
