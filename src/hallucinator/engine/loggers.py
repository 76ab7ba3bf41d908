"""The run's loggers: Lightning's own CSV, TensorBoard, W&B and MLflow loggers, as ``trainer.loggers`` names them.

Lightning logs the resolved config (the module's hyper-parameters) to each when training starts
and every metric of the run; :func:`log_final` adds the final evaluation and closes them::

    csv          RUN/csv/version_N/metrics.csv (and hparams.yaml)
    tensorboard  RUN/tensorboard/
    wandb        RUN/wandb/ ($WANDB_DIR/wandb/ when set); offline unless $WANDB_MODE or $WANDB_API_KEY is set
    mlflow       trainer.mlflow_tracking_uri, else $MLFLOW_TRACKING_URI, else sqlite:///RUN/mlflow.db

Example:
    >>> loggers = build_loggers(load_config("configs/quickstart.yaml", ["--trainer.loggers=[csv, mlflow]"]), Path("runs/q"))
    >>> trainer = pl.Trainer(logger=loggers)  # doctest: +SKIP
    >>> log_final(loggers, {"evaluation/knn/top1": 61.2}, step=trainer.global_step)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from hallucinator.engine.config import Config, ConfigError

# what each logger beyond Lightning's own needs installed; the extra that installs it has the logger's name
_PACKAGES = {"wandb": ("wandb",), "mlflow": ("mlflow",)}
# MLflow's database stores (sqlite://, postgresql://, ...) go through SQLAlchemy and its migrations (alembic)
_DATABASE_PACKAGES = ("sqlalchemy", "alembic")
_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def mlflow_tracking_uri(config: Config, output_dir: Path) -> str:
    """Where MLflow logs: ``trainer.mlflow_tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else an SQLite
    database in the run directory (MLflow 3 refuses its file store unless ``MLFLOW_ALLOW_FILE_STORE=true``)."""
    default = f"sqlite:///{(output_dir / 'mlflow.db').resolve()}"
    return config.trainer.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default


def check_logger_packages(config: Config) -> None:
    """A logger whose package is missing is a one-line ``ConfigError`` naming the extra, before any work."""
    for name in config.trainer.loggers:
        needed: tuple[str, ...] = _PACKAGES.get(name, ())
        if name == "mlflow":
            scheme = mlflow_tracking_uri(config, Path(config.output_dir)).split(":", 1)[0].split("+", 1)[0]
            needed += _DATABASE_PACKAGES if scheme in _DATABASE_SCHEMES else ()
        missing = [package for package in needed if importlib.util.find_spec(package) is None]
        if missing:
            raise ConfigError(
                f"trainer.loggers: {name} needs {' and '.join(missing)}: pip install 'hallucinator[{name}]'"
            )


def wandb_offline() -> bool:
    """W&B logs offline unless told otherwise: no ``$WANDB_MODE`` and no ``$WANDB_API_KEY``."""
    return "WANDB_MODE" not in os.environ and not os.environ.get("WANDB_API_KEY")


def _csv(config: Config, output_dir: Path) -> Logger:
    return CSVLogger(output_dir, name="csv")  # a resumed run writes the next csv/version_N


def _tensorboard(config: Config, output_dir: Path) -> Logger:
    return TensorBoardLogger(output_dir, name="tensorboard", version="", default_hp_metric=False)


def _wandb(config: Config, output_dir: Path) -> Logger:
    folder = Path(os.environ.get("WANDB_DIR") or output_dir)
    offline = wandb_offline()
    if offline:
        rank_zero_info(
            f"W&B logs offline (WANDB_MODE unset, no WANDB_API_KEY) into {folder / 'wandb'}; upload with "
            f"`wandb sync {folder / 'wandb'}/offline-run-*`, or set WANDB_MODE=online to log live"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        name=output_dir.resolve().name, save_dir=folder, project=config.trainer.experiment, offline=offline
    )


def _mlflow(config: Config, output_dir: Path) -> Logger:
    default_store = not config.trainer.mlflow_tracking_uri and "MLFLOW_TRACKING_URI" not in os.environ
    if default_store:
        output_dir.mkdir(parents=True, exist_ok=True)  # the database's folder
    return MLFlowLogger(
        experiment_name=config.trainer.experiment,
        run_name=output_dir.resolve().name,
        tracking_uri=mlflow_tracking_uri(config, output_dir),
        # beside the database, not MLflow's ./mlruns in the working directory
        artifact_location=(output_dir / "mlartifacts").resolve().as_uri() if default_store else None,
    )


_BUILDERS = {"csv": _csv, "tensorboard": _tensorboard, "wandb": _wandb, "mlflow": _mlflow}


def build_loggers(config: Config, output_dir: Path) -> list[Logger]:
    """The Lightning loggers ``config.trainer.loggers`` names, writing into ``output_dir`` (see the module docstring).

    A resumed run writes the next ``csv/version_N`` and starts a new W&B / MLflow run, named after the run directory.
    """
    check_logger_packages(config)
    return [_BUILDERS[kind](config, output_dir) for kind in config.trainer.loggers]


def log_final(loggers: Sequence[Logger], figures: Mapping[str, float], step: int) -> None:
    """Logs ``figures`` (the final evaluation) at ``step`` to each logger, then closes them: files written,
    the MLflow run marked finished and the W&B run finished, so that the next run in this process starts its own.
    """
    for logger in loggers:
        if figures:
            logger.log_metrics(dict(figures), step=step)
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()
