"""``hallucinator sweep``: the grid, the runs on real CIFAR-10 images, resuming, and the arms table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hallucinator.cli import main
from hallucinator.cli.sweep import SweepError, by_grid_point, parse_grid, plan, split_values
from hallucinator.evaluation.report import RunSummary

TINY = [
    "--model.width=8",
    "--batch-size=16",
    "--data.limit=64",
    "--trainer.max_steps=2",
    "--no-knn",
    "--trainer.progress_bar=false",
    "--device=cpu",
    "--model.hparams.queue_size=64",
]


def test_values_split_on_commas_outside_brackets():
    assert split_values("joint,adversarial, frozen") == ["joint", "adversarial", "frozen"]
    assert split_values("[0,0.1],[0,1.0]") == ["[0,0.1]", "[0,1.0]"]
    for bad in ("a,,b", "[0,1", "a,"):
        with pytest.raises(SweepError, match="--grid"):
            split_values(bad)


def test_plan_is_every_grid_point_times_every_seed_seed_major():
    grid = parse_grid(["hallucinator.enabled=false,true", "--model.hparams.temperature=0.1,0.2"])
    runs = plan(grid, [3, 4])
    assert [r.name for r in runs[:4]] == [
        "enabled=false-temperature=0.1-s3",
        "enabled=false-temperature=0.2-s3",
        "enabled=true-temperature=0.1-s3",
        "enabled=true-temperature=0.2-s3",
    ]
    assert [r.seed for r in runs] == [3] * 4 + [4] * 4
    assert runs[-1].overrides == ("--hallucinator.enabled=true", "--model.hparams.temperature=0.2")
    # the same last key part twice: the full keys tell the runs apart
    assert plan(parse_grid(["model.width=8", "data.width=1"]), [0])[0].name == "model.width=8-data.width=1-s0"
    with pytest.raises(SweepError, match="KEY=V1,V2"):
        parse_grid(["hallucinator.enabled"])


def test_a_typo_in_the_grid_stops_before_anything_runs(tmp_path, capsys):
    code = main(
        [
            "sweep",
            "configs/base/small.yaml",
            "--grid",
            "hallucinator.enabld=false,true",
            "--output-dir",
            str(tmp_path / "sweep"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hallucinator sweep: enabld=false-s0: config error: hallucinator.enabld: unknown key")
    assert "\n" not in err and not (tmp_path / "sweep").exists()


def test_a_hyper_parameter_the_method_lacks_stops_before_anything_runs(tmp_path, capsys):
    # the quickstart's SimCLR head keys under MoCo v2: caught for every run before the first one trains
    out = tmp_path / "sweep"
    code = main(
        [
            "sweep",
            "configs/quickstart.yaml",
            "--grid",
            "hallucinator.enabled=false,true",
            "--output-dir",
            str(out),
            "--model.method=mocov2",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "hallucinator sweep: enabled=false-s0: config error: model.hparams: unknown hyper-parameter(s)"
    )
    assert "'head_batchnorm'" in err and "\n" not in err and not out.exists()


def _summary(name: str) -> RunSummary:
    return RunSummary(name, "simclr", "cifar10", True, "-", 1.0, int(name.rsplit("-s", 1)[1]))


def test_arms_are_named_by_grid_point_unless_that_is_ambiguous():
    by_keys = {
        "hallucinator.train_mode=frozen": [_summary("train_mode=frozen-s0"), _summary("train_mode=frozen-s1")],
        "hallucinator.train_mode=joint": [_summary("train_mode=joint-s0")],
    }
    assert list(by_grid_point(by_keys)) == ["train_mode=frozen", "train_mode=joint"]
    assert list(by_grid_point(by_keys).values()) == list(by_keys.values())
    # two spellings of one config pooled into one arm: no single grid point names it
    pooled = {"a=1": [_summary("warmup_fraction=0-s0"), _summary("enabled=true-s1")], "a=2": [_summary("b-s0")]}
    assert by_grid_point(pooled) is pooled
    # one grid point split over two configs (the config edited between two sweeps into the folder)
    split = {"a=1": [_summary("enabled=true-s0")], "a=2": [_summary("enabled=true-s1")]}
    assert by_grid_point(split) is split


def test_sweep_runs_resumes_and_tabulates(cifar10_archive: Path, tmp_path: Path, capsys):
    out = tmp_path / "sweep"
    sweep = [
        "sweep",
        "configs/base/small.yaml",
        "--grid",
        "hallucinator.enabled=false,true",
        "--seeds",
        "0",
        "1",
        "--output-dir",
        str(out),
        "--parallel",
        "2",
        "--data-dir",
        str(cifar10_archive),
        "--model.method=mocov2",
        *TINY,
    ]
    assert main([*sweep, "--json"]) == 0
    printed = capsys.readouterr().out
    names = ["enabled=false-s0", "enabled=true-s0", "enabled=false-s1", "enabled=true-s1"]
    assert json.loads((out / "sweep.json").read_text()) == {name: "done" for name in names}
    for name in names:
        assert (out / name / "checkpoints" / "last.ckpt").is_file() and (out / name / "sweep.log").is_file()
    table = (out / "sweep.md").read_text()
    assert "| enabled=false | mocov2 | cifar10 | ✗ |" in table  # arms named as the grid wrote them
    assert "| enabled=true | mocov2 | cifar10 | ✓ |" in table
    assert table.count("| 0, 1 |") == 2  # two arms, each pooling seeds 0 and 1
    arms = json.loads(printed.strip().splitlines()[-1])["arms"]
    assert [(arm["arm"], arm["seeds"]) for arm in arms] == [
        ("enabled=false", [0, 1]),
        ("enabled=true", [0, 1]),
    ]

    # an interrupted run (not recorded as done, checkpoint kept) is resumed; finished ones are skipped
    (out / "sweep.json").write_text(json.dumps({name: "done" for name in names[:3]}))
    assert main([*sweep, "--dry-run", "--evaluate", "metrics"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"sweep: 4 runs (3 finished, 1 to resume, 0 to start) in {out}"
    assert printed[1].startswith(f"hallucinator pretrain configs/base/small.yaml --output-dir {out}/enabled=true-s1 ")
    # with --evaluate, each run's evaluation commands follow its pretrain command
    assert printed[1].endswith(
        f"--resume && hallucinator metrics {out}/enabled=true-s1/checkpoints/last.ckpt --json --no-progress"
    )
    assert main(sweep) == 0
    assert "[1/1] enabled=true-s1: resumed\n" in capsys.readouterr().out

    # another grid into the same folder: its table covers the runs of both sweeps
    (out / "sweep.json").write_text(json.dumps({name: "done" for name in names}))
    more = ["sweep", "configs/base/small.yaml", "--grid", "hallucinator.weight=0.25", "--output-dir", str(out)]
    assert main([*more, "--data-dir", str(cifar10_archive), "--model.method=mocov2", *TINY, "--json"]) == 0
    arms = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["arms"]
    assert sorted(arm["seeds"] for arm in arms) == [[0], [0, 1], [0, 1]]
    assert (out / "weight=0.25-s0" / "checkpoints" / "last.ckpt").is_file()


def test_many_runs_finishing_at_once_are_all_recorded(tmp_path: Path) -> None:
    """Runs of a parallel sweep that end together all reach sweep.json (one shared temporary name raced:
    FileNotFoundError on its replace, seen in 1 of 2 sweeps of 6 runs at --parallel 3)."""
    import sys
    import threading

    from hallucinator.cli.sweep import STATUS_FILE, PlannedRun, _record_done, _run_all

    # 16 threads released together, 10 writes each: the old code lost this race at once here
    status: dict[str, str] = {}
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def finish(thread: int) -> None:
        try:
            for i in range(10):
                barrier.wait()
                _record_done(tmp_path, status, f"run{thread}-{i}")
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=finish, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert json.loads((tmp_path / STATUS_FILE).read_text()) == {
        f"run{t}-{i}": "done" for t in range(16) for i in range(10)
    }
    assert [p.name for p in tmp_path.iterdir()] == [STATUS_FILE]  # no temporary left behind

    # and through the sweep's runner: 24 instant runs at --parallel 8
    out = tmp_path / "sweep"
    out.mkdir()
    todo = [PlannedRun(f"r{i}-s0", 0, ()) for i in range(24)]
    commands = {run.name: [[sys.executable, "-c", "pass"]] for run in todo}
    status = {}
    assert _run_all(todo, commands, out, status, parallel=8, resumable=set()) == []
    assert json.loads((out / STATUS_FILE).read_text()) == {run.name: "done" for run in todo}
