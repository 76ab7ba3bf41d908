"""The report: each run's summary, the tables (runs, arms pooled over seeds, the paper's layout) and the budget curve."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
import yaml

from hallucinator.evaluation.report import (
    arms_table,
    group_arms,
    load_run,
    paper_table,
    save_evaluation,
    unique_names,
    write_report,
)
from tests.evaluation.conftest import STEPS, make_run, series


def test_report_tables(tmp_path, drawn):
    runs = [
        make_run(
            tmp_path,
            "simclr-s0",
            hallucinator=False,
            seed=0,
            evaluation={
                "knn": {"top1": 50.0},
                "linear_fast": {"top1": 60.0, "best_top1": 62.0, "mode": "fast"},
                "online_linear": {"top1": 45.0},
                "metrics": {"pos_similarity": 0.5, "alignment": 0.9, "uniformity": -3.0, "g2": 0.21},
            },
        ),
        make_run(
            tmp_path,
            "simclr-s1",
            hallucinator=False,
            seed=1,
            evaluation={"knn": {"top1": 52.0}, "linear_fast": {"top1": 61.0, "mode": "fast"}},
        ),
        make_run(tmp_path, "simclr-hall-s0", hallucinator=True, seed=0),  # only training-time figures
    ]
    first = load_run(runs[0])
    assert (first.method, first.dataset, first.hallucinator, first.epochs) == ("simclr", "cifar10", False, 3)
    assert first.wall_seconds == pytest.approx(600) and first.g2 == 0.21
    assert load_run(runs[1]).epochs == 3.0  # from the CSV log: the epochs it entered
    save_evaluation(runs[1], "train", {"seconds": 600.0, "epochs": 2.05})
    assert load_run(runs[1]).epochs == pytest.approx(2.05)  # pretrain's exact record wins
    third = load_run(runs[2])
    assert third.knn_top1 == pytest.approx(40.0) and third.linear_top1 is None  # last logged knn_top1
    assert third.pos_similarity == pytest.approx(1 - 29 / 100)

    report = write_report(runs, tmp_path / "report")
    text = report.read_text()
    spread = statistics.stdev([60.0, 61.0])
    assert f"| simclr | 60.50 ± {spread:.2f} | - |" in text  # Table 1 layout: ✗ pooled over 2 seeds, ✓ not run
    assert f"| simclr | 51.00 ± {statistics.stdev([50.0, 52.0]):.2f} | 40.00 |" in text  # kNN version
    # linear top-1 after the last epoch, then at the best epoch, then the online probe's; the held-out pos. sim.,
    # then the training cos(q, k) over the last 20 logged steps (write_metrics: 1 - step / 100), no hallucinated pair
    train_pos = 1 - STEPS[-20:].mean() / 100
    assert (
        f"| simclr-s0 | simclr | cifar10 | ✗ | - | 3 | 50.00 | 60.00 | 62.00 | 45.00 | 0.500 | {train_pos:.3f} | - | - "
        "| 0.900 | -3.000 | 0.2100 | 10.0 min |"
    ) in text
    assert "| hallucinator.enabled=False | simclr | cifar10 | ✗ |" in text and "| 0, 1 |" in text  # two seeds, one arm
    assert "| simclr-s1 | simclr | cifar10 | ✗ | - | 2.05 | 52.00 |" in text
    assert (tmp_path / "report" / "positive_similarity.png").is_file()
    drawn_runs = [list(series(fig.axes[0])) for fig in drawn]  # Fig. 4 and the curves, one line per run
    assert drawn_runs == [["simclr-s0", "simclr-s1", "simclr-hall-s0"]] * 2
    assert json.loads((runs[0] / "evaluation.json").read_text())["knn"]["top1"] == 50.0
    assert paper_table([third]) == "| Dataset |\n| --- |"  # no linear figure yet: an empty table
    assert "| simclr | - | 40.00 |" in paper_table([third], "knn_top1")


def set_config(run, key: str, value) -> None:
    """Changes one dotted key of the run's config.yaml, as a run with that override would have written it."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    *sections, last = key.split(".")
    node = config
    for section in sections:
        node = node[section]
    node[last] = value
    (run / "config.yaml").write_text(yaml.safe_dump(config))


def test_runs_pool_only_when_their_configs_differ_in_the_seed_alone(tmp_path):
    knn = {"knn": {"top1": 50.0}}
    fp32 = make_run(tmp_path, "fp32-s0", hallucinator=True, seed=0, evaluation=knn)
    fp32_again = make_run(tmp_path, "fp32-s1", hallucinator=True, seed=1, evaluation={"knn": {"top1": 54.0}})
    bf16 = make_run(tmp_path, "bf16-s0", hallucinator=True, seed=0, evaluation={"knn": {"top1": 58.0}})
    set_config(bf16, "trainer.precision", "bf16-mixed")
    subset = make_run(tmp_path, "subset-s0", hallucinator=True, seed=0, evaluation=knn)
    set_config(subset, "data.data_dir", "/elsewhere/cifar10-5k.tar.gz")
    elsewhere = make_run(tmp_path, "moved-s0", hallucinator=True, seed=0, evaluation=knn)
    set_config(elsewhere, "data.data_dir", "/another/machine/data")  # same archive name: same dataset
    bookkeeping = make_run(tmp_path, "threads-s2", hallucinator=True, seed=2, evaluation=knn)
    set_config(bookkeeping, "trainer.cpu_threads", 1)  # how it ran, not what it trained
    set_config(bookkeeping, "trainer.compile", True)
    set_config(bookkeeping, "optimizer.implementation", "fused")
    set_config(bookkeeping, "trainer.loggers", ["csv", "wandb"])  # where it was logged, not what it trained
    set_config(bookkeeping, "trainer.option_added_later", None)  # a key the other runs lack, at a None default

    arms = group_arms([load_run(r) for r in (fp32, fp32_again, bf16, subset, elsewhere, bookkeeping)])
    assert {name: [run.name for run in members] for name, members in arms.items()} == {
        "data.data_dir=data, trainer.precision=auto": ["fp32-s0", "fp32-s1", "moved-s0", "threads-s2"],
        "data.data_dir=data, trainer.precision=bf16-mixed": ["bf16-s0"],
        "data.data_dir=cifar10-5k.tar.gz, trainer.precision=auto": ["subset-s0"],
    }

    table = arms_table(group_arms([load_run(r) for r in (fp32, fp32_again, bf16, elsewhere)]))
    assert "| trainer.precision=auto | simclr | cifar10 | ✓ |" in table
    assert f"| 51.33 ± {statistics.stdev([50.0, 54.0, 50.0]):.2f} |" in table
    assert "| 0, 1, 0 ⚠ seed 0 repeated |" in table  # fp32-s0 and moved-s0: the same seed twice is flagged
    assert "| trainer.precision=bf16-mixed | simclr | cifar10 | ✓ | - | 3 | 58.00 |" in table

    layout = paper_table([load_run(r) for r in (fp32, fp32_again, bf16)], "knn_top1")
    assert f"| simclr | - | 52.00 ± {statistics.stdev([50.0, 54.0]):.2f} / 58.00 |" in layout  # two arms, not pooled


def test_an_off_hallucinators_settings_do_not_name_its_arm_unless_two_arms_would_share_a_name(tmp_path):
    def run(name: str, enabled: bool, warmup: float):
        path = make_run(tmp_path, name, hallucinator=enabled, seed=0, evaluation={"knn": {"top1": 50.0}})
        set_config(path, "hallucinator.warmup_fraction", warmup)
        return load_run(path)

    plain, step0, warm = run("plain-s0", False, 0.5), run("step0-s0", True, 0.0), run("warm-s0", True, 0.5)
    assert list(group_arms([plain, step0, warm])) == [
        "hallucinator.enabled=False",
        "hallucinator.enabled=True, hallucinator.warmup_fraction=0.0",
        "hallucinator.enabled=True, hallucinator.warmup_fraction=0.5",
    ]
    plain_too = run("plain-too-s0", False, 0.0)  # two plain arms: short names would merge them into one
    assert list(group_arms([plain, plain_too])) == [
        "hallucinator.warmup_fraction=0.5",
        "hallucinator.warmup_fraction=0.0",
    ]


def test_hardness_is_the_mean_of_the_last_logged_steps(tmp_path):
    run = make_run(tmp_path, "hal-s0", hallucinator=True, seed=0)
    path = run / "csv" / "version_1" / "metrics.csv"
    path.parent.mkdir(parents=True)
    rows = ["epoch,step,train/hal_similarity,train/extrap_similarity,train/pos_similarity"]
    rows += [f"3,{30 + i},{i / 100},{0.5 + i / 100},{0.6 + i / 100}" for i in range(30)]  # 30 more steps, 0.00 ... 0.29
    path.write_text("\n".join(rows) + "\n")
    summary = load_run(run)
    last20 = statistics.fmean([i / 100 for i in range(10, 30)])
    assert summary.hal_similarity == pytest.approx(last20)
    assert summary.extrap_similarity == pytest.approx(0.5 + last20)
    assert summary.train_pos_similarity == pytest.approx(0.6 + last20)
    # the three training cosines side by side, in the order of the intended chain cos(q, k) > cos(q', k) > cos(q_hat, k)
    assert f"| {0.6 + last20:.3f} | {0.5 + last20:.3f} | {last20:.3f} |" in arms_table(group_arms([summary]))


def test_labels_are_the_shortest_trailing_paths_that_tell_runs_apart(tmp_path):
    simclr, mocov2, other = tmp_path / "simclr" / "arm-s0", tmp_path / "mocov2" / "arm-s0", tmp_path / "mocov2" / "b-s0"
    assert unique_names([simclr, other]) == ["arm-s0", "b-s0"]
    assert unique_names([simclr, mocov2, other]) == ["simclr/arm-s0", "mocov2/arm-s0", "mocov2/b-s0"]


def test_budget_curve_pools_seeds_per_arm_and_budget_and_draws_one_line_per_arm(tmp_path, drawn):
    from hallucinator.evaluation.report import budget_curve, budget_table, load_run, write_budget_curve

    knn = {  # (hallucinator, steps, seed) -> kNN top-1
        (False, 1600, 0): 54.0,
        (False, 1600, 1): 56.0,
        (False, 6400, 0): 70.0,
        (True, 1600, 0): 50.0,
        (True, 6400, 0): 68.0,
        (True, 6400, 1): 69.0,
    }
    runs = []
    for (hallucinator, steps, seed), top1 in knn.items():
        run = make_run(
            tmp_path,
            f"{hallucinator}-{steps}-s{seed}",
            hallucinator=hallucinator,
            seed=seed,
            evaluation={"knn": {"top1": top1}, "train": {"epochs": steps / 390.625}},
        )
        set_config(run, "trainer.max_steps", steps)
        runs.append(load_run(run))
    curves = budget_curve(runs)
    assert set(curves) == {"hallucinator.enabled=False", "hallucinator.enabled=True"}
    assert curves["hallucinator.enabled=False"] == [(4.1, 55.0, pytest.approx(math.sqrt(2))), (16.4, 70.0, None)]
    assert curves["hallucinator.enabled=True"] == [(4.1, 50.0, None), (16.4, 68.5, pytest.approx(math.sqrt(0.5)))]
    table = budget_table(curves)
    assert "| arm | 4.1 epochs | 16.4 epochs |" in table
    assert "| hallucinator.enabled=True | 50.00 | 68.50 ± 0.71 |" in table
    paths = write_budget_curve(runs, tmp_path / "curve.png")
    assert [p.name for p in paths] == ["curve.png", "curve.svg"] and all(p.stat().st_size > 0 for p in paths)
    (ax,) = drawn[-1].axes
    # errorbar() draws a container per arm: its label, its data line and its bars
    lines = {
        c.get_label(): (np.asarray(c.lines[0].get_xdata(), float), np.asarray(c.lines[0].get_ydata(), float))
        for c in ax.containers
    }
    assert set(lines) == set(curves) and set(ax.get_legend_handles_labels()[1]) == set(curves)
    np.testing.assert_allclose(lines["hallucinator.enabled=True"][1], [50.0, 68.5])
    np.testing.assert_allclose(lines["hallucinator.enabled=False"][0], [4.1, 16.4])
    # the error bars: one bar per point with a spread (their half-lengths are the sample std)
    bars = [c for c in ax.collections if c.get_segments()]
    half_lengths = sorted(abs(seg[1][1] - seg[0][1]) / 2 for c in bars for seg in c.get_segments())
    np.testing.assert_allclose(half_lengths, sorted([0, 0, math.sqrt(2), math.sqrt(0.5)]), atol=1e-9)
