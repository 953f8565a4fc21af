"""`python -m tsllm.diagnose` never loses results, and says what it found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tsllm.diagnose import main as diagnose_main
from tsllm.train import run

from conftest import make_cfg


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("diagnose") / "hybrid"
    run(make_cfg("mode=hybrid", "llm=tiny_random", "encoder=cnn", "encoder.channels=4", "encoder.num_tokens=4",
                 "diagnostics=none"), run_dir=run_dir)
    return run_dir


def level_of(run_dir: Path) -> str:
    return json.loads((run_dir / "diagnostics.json").read_text())["level"]


def test_without_level_a_run_keeps_its_own_and_full_is_never_replaced_by_basic(
        hybrid_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert diagnose_main([str(hybrid_run)]) == 0  # no diagnostics yet: basic
    assert level_of(hybrid_run) == "basic"
    assert diagnose_main([str(hybrid_run), "--level", "full", "--max-series", "40"]) == 0
    full = json.loads((hybrid_run / "diagnostics.json").read_text())
    assert full["level"] == "full" and "probes" in full
    assert diagnose_main([str(hybrid_run), "--max-series", "40"]) == 0  # the run's own level: full again
    assert level_of(hybrid_run) == "full"
    assert diagnose_main([str(hybrid_run), "--level", "basic"]) == 0  # poorer: refused, the file kept
    assert json.loads((hybrid_run / "diagnostics.json").read_text()) == full
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out.startswith(f"{hybrid_run}: full; norm ratio ") and "nearest-word cosine" in out
    assert "collapse cosine" in out and "probe by layer " in out and "chosen without TEST: layer" in out
    assert diagnose_main([str(hybrid_run), "--level", "basic", "--force"]) == 0
    assert level_of(hybrid_run) == "basic"


def test_a_cka_against_the_standalone_twin_is_kept_when_the_twin_is_not_given(
        hybrid_run: Path, tmp_path: Path) -> None:
    twin = tmp_path / "standalone"
    run(make_cfg("encoder=cnn", "encoder.channels=4", "encoder.num_tokens=4", "llm=tiny_random", "diagnostics=none"),
        run_dir=twin)
    assert diagnose_main([str(hybrid_run), str(twin), "--level", "full", "--max-series", "40"]) == 0
    cka = json.loads((hybrid_run / "diagnostics.json").read_text())["cka_vs_standalone"]
    assert diagnose_main([str(hybrid_run), "--level", "full", "--max-series", "40"]) == 0
    assert json.loads((hybrid_run / "diagnostics.json").read_text())["cka_vs_standalone"] == cka
