"""The GPU check in one command: CUDA tests, throughput, Hallucinator overhead, data path, SimCLR off / on.

Every part runs in its own process under its own time limit, so a slow or failing part cannot
eat the others' time or stop them; what each part found goes into ``OUT/device_check.json`` and
``OUT/device_check.md`` (and the parts' output into ``OUT/device_check.log``), also when some fail.
The whole run stays within ``--budget`` seconds (540 = 9 minutes); the two SimCLR runs share what
the other parts leave, with the same number of epochs each, sized from the measured throughput.

    bash experiments/device_check.sh OUT [DATA]             # on a GPU (DATA: the CIFAR-10 archive)
    bash experiments/device_check.sh OUT [DATA] --dry-run   # every part, tiny, on the CPU (CI runs it)

Installs nothing: it runs the repository's own ``src`` with the interpreter it is started with;
lightly is used when importable and reported as missing otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


@dataclass
class Part:
    """One part: a command, the seconds it may take, and how to read its figures from its output."""

    name: str
    title: str
    budget_s: float
    status: str = "not run"
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)
    note: str = ""


def last_json(output: str) -> dict:
    """The last line of ``output`` that is a JSON object (what every benchmark ends with)."""
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return {}


class Check:
    """Runs the parts in order within ``budget_s`` and writes the report after each one."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dry = args.dry_run
        self.out = Path(args.out)
        self.work = Path(args.work_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = (self.out / "device_check.log").open("w")
        self.started = time.monotonic()
        self.parts: list[Part] = []
        self.env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "HALLUCINATOR_TEST_CIFAR10": args.data,
            "PYTHONUNBUFFERED": "1",
        }

    def limit(self, gpu_seconds: float) -> float:
        """A part's own time limit: ``gpu_seconds`` on the GPU; in the dry run, room for a loaded CI machine."""
        return 120.0 if self.dry else gpu_seconds

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.started)

    def run(self, part: Part, command: list[str], reserve: float = 0.0) -> str:
        """Runs ``command`` for at most ``part.budget_s`` (and never into the ``reserve`` kept for later parts)."""
        self.parts.append(part)
        limit = min(part.budget_s, self.left() - reserve)
        if limit < 5:
            part.status, part.note = "skipped", f"no time left ({self.left():.0f} s)"
            self.write()
            return ""
        print(f"[{time.monotonic() - self.started:5.0f} s] {part.name}: up to {limit:.0f} s", flush=True)
        self.log.write(f"\n===== {part.name} (limit {limit:.0f} s): {' '.join(command)}\n")
        self.log.flush()
        started = time.monotonic()
        # a session of its own, so that a part stopped at its limit takes its children (benchmark workers) along
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=limit)
            part.status = "ok" if process.returncode == 0 else f"failed (exit {process.returncode})"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            part.status = f"timed out after {limit:.0f} s"
        part.seconds = round(time.monotonic() - started, 1)
        self.log.write(output)
        self.log.flush()
        if part.status != "ok" and not part.note:
            lines = [line for line in output.strip().splitlines() if line.strip()]
            part.note = lines[-1][:300] if lines else ""
        print(f"         {part.name}: {part.status} in {part.seconds:.0f} s", flush=True)
        return output

    # ---- the parts

    def environment(self) -> None:
        import torch

        info = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_count": os.cpu_count(),
            "dry_run": self.dry,
            "data": str(self.args.data),
        }
        try:
            import lightly

            info["lightly"] = lightly.__version__
        except ImportError:
            info["lightly"] = None
        if torch.cuda.is_available():
            properties = torch.cuda.get_device_properties(0)
            info.update(
                gpu=properties.name,
                gpu_memory_gb=round(properties.total_memory / 2**30, 1),
                gpu_capability=f"{properties.major}.{properties.minor}",
                gpu_count=torch.cuda.device_count(),
            )
        else:
            info["gpu"] = None
        part = Part("environment", "Machine and versions", 0, status="ok", figures=info)
        self.parts.append(part)

    def prepare(self) -> None:
        """Decodes CIFAR-10 into the cache once, so that no later part pays for it in its own time."""
        code = (
            "import sys; from hallucinator.data import build_dataset\n"
            "for split in ('pretrain', 'train', 'test'): print(split, len(build_dataset('cifar10', sys.argv[1], split)))"
        )
        self.run(
            Part("prepare", "Decode CIFAR-10 into the cache", self.limit(150)),
            [PY, "-c", code, self.args.data],
            reserve=self.reserve(after="prepare"),
        )

    def cuda_tests(self) -> None:
        tests = [
            "tests/cross_cutting/test_devices.py",
            "tests/engine/test_device_data.py",
            "tests/data/test_augment.py::test_cuda_matches_cpu_for_same_generator_on_cpu",
        ]
        select = ["-k", "cuda"] if self.dry else []  # the CUDA tests alone (skipped on the CPU)
        output = self.run(
            Part("cuda_tests", "CUDA tests", self.limit(120)),
            [PY, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *tests, *select],
            reserve=self.reserve(after="cuda_tests"),
        )
        part = self.parts[-1]
        counts = re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", output)
        part.figures = {kind: int(number) for number, kind in counts}

    def throughput(self) -> None:
        if self.dry:
            width, precision, variants = 8, "32-true", ["eager-cl"]
            sizes = [
                "--device",
                "cpu",
                "--batch-size",
                "16",
                "--steps",
                "1",
                "--warmup",
                "1",
                "--methods",
                "simclr",
                "--threads",
                "1",
                "--gemm-size",
                "128",
                "--gemm-seconds",
                "0.1",
            ]
        else:
            width, precision, variants = 64, "bf16-mixed", ["eager-cl", "compile-cl", "eager"]
            sizes = [
                "--device",
                "gpu",
                "--batch-size",
                "512",
                "--steps",
                "20",
                "--warmup",
                "5",
                "--workers",
                "8",
                "--lightly-precision",
                "bf16-mixed",
                "--methods",
                "simclr",
                "mocov2",
            ]
        sizes += ["--widths", str(width), "--precisions", precision, "--variants", *variants]
        # SimCLR as the engine ships it (eager, channels_last): what sizes the SimCLR runs below
        self.simclr_pairs_key = f"ours-simclr-w{width}-{precision}_pairs_per_s"
        output = self.run(
            Part("throughput", "Pre-training throughput, ours vs lightly", self.limit(200)),
            [
                PY,
                "benchmarks/pretrain_throughput.py",
                "--data-dir",
                self.args.data,
                "--rounds",
                "1",
                "--partial",
                "--output",
                str(self.work / "throughput"),
                *sizes,
            ],
            reserve=self.reserve(after="throughput"),
        )
        self.parts[-1].figures = last_json(output)

    def overhead(self) -> None:
        sizes = (
            [
                "--device",
                "cpu",
                "--width",
                "8",
                "--batch-size",
                "16",
                "--image-size",
                "16",
                "--repeats",
                "1",
                "--warmup",
                "0",
                "--threads",
                "1",
                "--methods",
                "mocov2",
                "simclr",
            ]
            if self.dry
            else [
                "--device",
                "cuda",
                "--width",
                "64",
                "--batch-size",
                "512",
                "--repeats",
                "10",
                "--warmup",
                "3",
                "--precision",
                "bf16-mixed",
            ]
        )
        output = self.run(
            Part("overhead", "Hallucinator step-time overhead", self.limit(60)),
            [PY, "benchmarks/hallucinator_overhead.py", *sizes],
            reserve=self.reserve(after="overhead"),
        )
        self.parts[-1].figures = last_json(output)

    def data_path(self) -> None:
        sizes = (
            [
                "--device",
                "cpu",
                "--rehearse",
                "--synthetic",
                "64",
                "--width",
                "8",
                "--batch-size",
                "16",
                "--steps",
                "1",
                "--precision",
                "32-true",
                "--threads",
                "1",
            ]
            if self.dry
            else [
                "--device",
                "cuda",
                "--data-dir",
                self.args.data,
                "--width",
                "64",
                "--batch-size",
                "512",
                "--steps",
                "10",
                "--precision",
                "bf16-mixed",
            ]
        )
        output = self.run(
            Part("data_path", "GPU-resident data path: host syncs, GPU busy", self.limit(45)),
            [PY, "benchmarks/data_path_profile.py", *sizes],
            reserve=self.reserve(after="data_path"),
        )
        self.parts[-1].figures = last_json(output)

    def epochs_that_fit(self, seconds: float) -> int:
        """Epochs of SimCLR + Hallucinator that fit in ``seconds``, from the measured pairs/s (fixed costs first)."""
        throughput = next((p.figures for p in self.parts if p.name == "throughput"), {})
        overhead = next((p.figures for p in self.parts if p.name == "overhead"), {})
        pairs_per_s = throughput.get(self.simclr_pairs_key) or 2000.0  # the fallback is deliberately low
        ratio = overhead.get("methods", {}).get("simclr", {}).get("ratio") or 1.1
        epoch_s = 50_000 / pairs_per_s * max(ratio, 1.0) * 1.3  # 30 %: the engine's own per-step costs
        fixed_s = 45  # start-up, the first epoch's kernel selection, the final kNN over 60,000 images
        return max(1, math.floor((seconds - fixed_s) / epoch_s))

    def simclr(self) -> None:
        """SimCLR on CIFAR-10 without and with the Hallucinator: paper settings, same epochs, final kNN."""
        runs = [("simclr_off", "cifar10_simclr_base"), ("simclr_on", "cifar10_simclr_hal")]
        share = (self.left() - 10) / 2
        planned = self.epochs_that_fit(share)
        if self.dry:  # the plan is computed (and reported) all the same; the runs take 2 steps
            sizes = [
                "--device",
                "cpu",
                "--trainer.max_steps=2",
                "--data.limit=64",
                "--batch-size",
                "16",
                "--model.width=8",
                "--knn-limit",
                "64",
                "--trainer.cpu_threads=1",
            ]
            epochs = 1
        else:
            epochs = planned
            sizes = ["--device", "gpu", "--trainer.checkpoint_every_n_epochs=0"]
        for number, (name, config) in enumerate(runs):
            run = self.work / name
            command = [
                PY,
                "experiments/device_check.py",
                "--pretrain-and-report-memory",
                "--",
                f"configs/table1/{config}.yaml",
                "--data-dir",
                self.args.data,
                "--output-dir",
                str(run),
                "--epochs",
                str(epochs),
                "--trainer.progress_bar=false",
                *sizes,
            ]
            part = Part(
                name,
                f"SimCLR {'with' if name.endswith('on') else 'without'} the Hallucinator, {epochs} epochs",
                share + 5,
            )
            output = self.run(part, command, reserve=0 if number else share - 5)
            measured = next((p.figures for p in self.parts if p.name == "throughput"), {}).get(self.simclr_pairs_key)
            part.figures = {
                "epochs": epochs,
                "planned_epochs": planned,
                "planned_from_pairs_per_s": measured,
                **last_json(output),
            }
            knn = re.search(r"kNN top-1 on the cifar10 test set \((.*?)\): ([\d.]+) % \(top-5 ([\d.]+) %", output)
            if knn:
                part.figures.update(knn_images=knn[1], knn_top1=float(knn[2]), knn_top5=float(knn[3]))
            evaluation = run / "evaluation.json"
            if evaluation.is_file():
                train = json.loads(evaluation.read_text()).get("train", {})
                part.figures.update(train_seconds=train.get("seconds"), pairs_per_s=train.get("images_per_second"))

    # minimum seconds each later part keeps for itself while an earlier part runs
    MINIMA = {"prepare": 30, "cuda_tests": 60, "throughput": 90, "overhead": 30, "data_path": 20, "simclr": 150}

    def reserve(self, after: str) -> float:
        names = list(self.MINIMA)
        later = names[names.index(after) + 1 :]
        return 0.0 if self.dry else sum(self.MINIMA[name] for name in later)

    # ---- the report

    def write(self) -> None:
        report = {
            "elapsed_s": round(time.monotonic() - self.started, 1),
            "budget_s": self.args.budget,
            "parts": {
                p.name: {"status": p.status, "seconds": p.seconds, "note": p.note, **p.figures} for p in self.parts
            },
        }
        (self.out / "device_check.json").write_text(json.dumps(report, indent=1))
        (self.out / "device_check.md").write_text(self.markdown(report))

    def markdown(self, report: dict) -> str:
        env = report["parts"].get("environment", {})
        lines = [
            "# Device check",
            "",
            f"GPU: {env.get('gpu') or 'none (CPU dry run)'}"
            + (f", {env.get('gpu_memory_gb')} GiB, capability {env.get('gpu_capability')}" if env.get("gpu") else ""),
            f"torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, Python {env.get('python')}, "
            f"{env.get('cpu_count')} CPUs ({env.get('cpu_capability')}); lightly: "
            f"{env.get('lightly') or 'not installed (its side of the throughput comparison is skipped)'}",
            f"Elapsed {report['elapsed_s']:.0f} s of a {report['budget_s']:.0f} s budget"
            + ("; DRY RUN: tiny sizes on the CPU, no figure here means anything" if env.get("dry_run") else ""),
            "",
            "| part | status | seconds | note |",
            "| --- | --- | --- | --- |",
        ]
        for part in self.parts:
            lines.append(f"| {part.title} | {part.status} | {part.seconds:.0f} | {part.note.replace('|', '/')} |")
        lines += ["", "## Figures", ""]
        for part in self.parts:
            if part.name == "environment" or not part.figures:
                continue
            lines.append(f"### {part.title}")
            lines.append("")
            lines += [f"- `{key}`: {value}" for key, value in _flatten(part.figures).items()]
            lines.append("")
        return "\n".join(lines)

    def main(self) -> int:
        self.environment()
        self.write()
        for step in (self.prepare, self.cuda_tests, self.throughput, self.overhead, self.data_path, self.simclr):
            step()
            self.write()
        self.log.close()
        failed = [p.name for p in self.parts if p.status != "ok"]
        print(
            f"device check: {len(self.parts) - len(failed)} of {len(self.parts)} parts ok"
            + (f"; not ok: {', '.join(failed)}" if failed else "")
            + f"; report in {self.out}/device_check.md"
        )
        return 1 if failed else 0


def _flatten(figures: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in figures.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def pretrain_and_report_memory(argv: list[str]) -> int:
    """``hallucinator pretrain ARGV``, then one JSON line with the run's peak GPU memory."""
    import torch

    from hallucinator.cli import main

    code = main(["pretrain", *argv])
    figures = {"exit": code}
    if torch.cuda.is_available():
        figures["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    print(json.dumps(figures))
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--pretrain-and-report-memory":
        return pretrain_and_report_memory(argv[2:] if argv[1:2] == ["--"] else argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for device_check.json, device_check.md and device_check.log")
    parser.add_argument("data", nargs="?", default="../shared/datasets/cifar10-jpeg.tar.gz", help="CIFAR-10 archive")
    parser.add_argument("--dry-run", action="store_true", help="every part with tiny sizes on the CPU")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for everything (default 9 minutes)")
    parser.add_argument(
        "--work-dir", default="/tmp/hallucinator-device-check", help="runs and checkpoints (not copied back)"
    )
    args = parser.parse_args(argv)
    # relative to where the command was started; the parts run in the repository root
    args.out, args.data, args.work_dir = (str(Path(path).resolve()) for path in (args.out, args.data, args.work_dir))
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("device check: torch sees no CUDA device; on a machine without one use --dry-run", file=sys.stderr)
            return 2
    if not Path(args.data).exists():
        print(
            f"device check: no dataset at {args.data}; pass the CIFAR-10 archive as the second argument",
            file=sys.stderr,
        )
        return 2
    return Check(args).main()


if __name__ == "__main__":
    sys.exit(main())
