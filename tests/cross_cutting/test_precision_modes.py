"""The suite passes whichever precision ``trainer.precision: auto`` picks: fp32 on AVX2 CPUs, bf16 on AVX-512
BF16 / AMX ones. ``$HALLUCINATOR_FORCE_PRECISION`` (``pytest --force-precision``) makes ``auto`` pick the
other one, and the precision-sensitive tests run under it here, so each CPU kind also checks the other's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hallucinator.engine.config import Config, ConfigError, TrainerConfig
from hallucinator.engine.train import FORCE_PRECISION_VARIABLE, cpu_has_native_bf16, resolve_precision

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _auto(**trainer: object) -> tuple[str, str]:
    return resolve_precision(Config(trainer=TrainerConfig(accelerator="cpu", **trainer)))  # type: ignore[arg-type]


def test_the_variable_forces_what_auto_picks_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    for forced in ("bf16-mixed", "32-true"):
        monkeypatch.setenv(FORCE_PRECISION_VARIABLE, forced)
        precision, reason = _auto()
        assert precision == forced and FORCE_PRECISION_VARIABLE in reason
        assert _auto(precision="32-true")[0] == "32-true"  # a pinned precision stays pinned
    monkeypatch.setenv(FORCE_PRECISION_VARIABLE, "fp8")
    with pytest.raises(ConfigError, match=r"HALLUCINATOR_FORCE_PRECISION: 'fp8' is not one of"):
        _auto()
    monkeypatch.delenv(FORCE_PRECISION_VARIABLE)
    assert _auto()[0] == ("bf16-mixed" if cpu_has_native_bf16() else "32-true")


def test_auto_picks_fp32_where_onednn_is_capped_below_its_bf16_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FORCE_PRECISION_VARIABLE, raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr("torch.cpu._is_avx512_bf16_supported", lambda: True)  # an AVX-512 BF16 CPU, whatever runs this
    for cap, native in (("", True), ("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", True)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert cpu_has_native_bf16() is native, cap
        precision, reason = _auto()
        assert precision == ("bf16-mixed" if native else "32-true") and ("ONEDNN_MAX_CPU_ISA" in reason) != native
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")  # oneDNN's older name for the same cap
    assert not cpu_has_native_bf16()


@pytest.mark.skipif(bool(os.environ.get(FORCE_PRECISION_VARIABLE)), reason="this run already forces a precision")
def test_precision_sensitive_tests_pass_under_the_other_cpu_kinds_precision(tmp_path: Path) -> None:
    other = "32-true" if cpu_has_native_bf16() else "bf16-mixed"
    log = tmp_path / "forced.log"
    command = [sys.executable, "-m", "pytest", "-m", "precision_sensitive", f"--force-precision={other}"]
    command += ["-q", "-p", "no:cacheprovider", "-rf"]
    with log.open("w") as out:
        done = subprocess.run(command, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=1500)
    text = log.read_text()
    assert done.returncode == 0, f"with --force-precision={other}:\n{text[-6000:]}"
    assert " passed" in text.splitlines()[-1]
