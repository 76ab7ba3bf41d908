"""``hallucinator embed``: its output is checked before any work."""

from __future__ import annotations

from hallucinator.cli import main


def test_embed_checks_its_output_before_any_work(tmp_path, capsys) -> None:
    # the checkpoint does not even exist: the output is refused first, in one line
    embed = ["embed", str(tmp_path / "missing.ckpt"), "--data-dir", str(tmp_path)]
    assert main([*embed, "--output", str(tmp_path / "e.csv")]) == 2
    assert (
        capsys.readouterr().err
        == f"hallucinator embed: --output {tmp_path / 'e.csv'}: the file must end in .npz or .parquet\n"
    )
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert main([*embed, "--output", str(tmp_path / "e.parquet")]) == 2
        assert "pip install 'hallucinator[parquet]'" in capsys.readouterr().err
    assert main([*embed, "--output", str(tmp_path / "e.npz")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
