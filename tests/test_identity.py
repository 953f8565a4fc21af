"""Which arm a run is: declared once by its reader, computed once (tsllm.identity), read by every table."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest
from omegaconf import OmegaConf
from torch import Tensor

from tsllm.config import ARM
from tsllm.identity import identify
from tsllm.readers import ReaderContext
from tsllm.readers.base import Reader, ReaderOptions
from tsllm.results import load_records
from tsllm.train import run

from conftest import make_cfg

ROOT = Path(__file__).parents[1]


@dataclass
class ProbeOptions(ReaderOptions):
    _target_: str = "test_identity.ProbeReader"
    name: str = "probe"
    scale: float = field(default=1.0, metadata=ARM)
    note: str = "not an arm setting"


class ProbeReader(Reader):
    """A reader declared in a test: the mean of the latents, times a scale that names its arm."""

    Options: ClassVar[type[ProbeOptions]] = ProbeOptions

    def __init__(self, *, num_tokens: int, scale: float) -> None:
        super().__init__(num_tokens=num_tokens)
        self.scale = scale

    @classmethod
    def from_context(cls, ctx: ReaderContext, options: ProbeOptions) -> ProbeReader:
        return cls(num_tokens=ctx.num_tokens, scale=options.scale)

    def read(self, latents: Tensor) -> Tensor:
        return self.scale * latents.float().mean(dim=1)


@dataclass
class ProbeOptionsScaled(ProbeOptions):
    scale: float = field(default=2.0, metadata=ARM)


class ProbeReaderScaled(ProbeReader):
    """The same reader with only its declared default changed."""

    Options: ClassVar[type[ProbeOptions]] = ProbeOptionsScaled


def _config_with(reader: dict) -> dict:
    config = OmegaConf.to_container(make_cfg("encoder=mlp", "diagnostics=none"), resolve=True)
    config["reader"] = reader
    return config


def test_a_changed_default_in_the_readers_declaration_alone_changes_the_label(tmp_path: Path) -> None:
    reader = {"_target_": "test_identity.ProbeReader", "name": "probe", "scale": 2.0, "note": "x"}
    assert identify(_config_with(reader)).arm == "probe[scale=2.0]"
    assert identify(_config_with({**reader, "scale": 1.0})).arm == "probe"  # at its default: not named
    scaled = {**reader, "_target_": "test_identity.ProbeReaderScaled"}
    assert identify(_config_with(scaled)).arm == "probe"  # 2.0 is now the declared default
    # train writes the label it computes; results computes the same for a record without one.
    record = run(OmegaConf.create(_config_with(reader)), run_dir=tmp_path / "runs" / "a")
    assert record["arm"] == "probe[scale=2.0]" and record["mode"] == "standalone"
    older = json.loads((tmp_path / "runs" / "a" / "record.json").read_text())
    for key in ("arm", "cell", "context", "mode"):
        del older[key]
    (tmp_path / "runs" / "b").mkdir()
    (tmp_path / "runs" / "b" / "record.json").write_text(json.dumps(older))
    df = load_records(tmp_path / "runs")
    assert list(df["run_arm"]) == ["probe[scale=2.0]"] * 2 and df["cell"].nunique() == 1


def test_every_committed_record_keeps_its_arm_label_cell_and_context() -> None:
    """The identity of each committed run, recomputed from its record, is what the committed tables hold."""
    tables = {}
    for tidy in sorted((ROOT / "results").glob("*/tidy.csv")):
        for row in csv.DictReader(tidy.open()):
            tables[row["path"].split("results/runs/", 1)[-1]] = row
    records = sorted((ROOT / "results" / "runs").rglob("record.json"))
    assert len(records) > 700 and len(tables) > 600
    checked = 0
    for path in records:
        record = json.loads(path.read_text())
        identity = identify(record["config"])
        if "arm" in record:
            assert (identity.arm, identity.mode) == (record["arm"], record["mode"]), path
        row = tables.get(str(path.relative_to(ROOT / "results" / "runs")))
        if row is not None:
            assert (identity.cell, identity.context) == (row["cell"], row["context"]), path
            assert row["run_arm"] in ("", identity.arm), path
            checked += 1
    assert checked > 600


@pytest.mark.parametrize(("overrides", "arm", "mode"), [
    ([], "mean", "standalone"),
    (["mode=hybrid"], "llm", "hybrid"),
    (["mode=lora"], "llm+lora", "lora"),
    (["mode=hybrid", "align=prototypes"], "llm[align=prototypes]", "hybrid"),
    (["control=random_llm"], "llm[weights=random]", "hybrid"),
    (["control=truncated"], "llm[num_layers=8]", "hybrid"),
    (["mode=study_standalone"], "mean[bos=True]", "standalone"),
    (["mode=study_hybrid"], "llm[suffix=[PAD]]", "hybrid"),
    (["reader=attention", "reader.shuffle_latents=eval"], "attention[shuffle_latents=eval]", "standalone"),
    (["mode=text"], "text_probe", "text"),
    (["mode=standalone", "llm.weights=random"], "mean", "standalone"),  # no LLM reads: its settings name nothing
])
def test_labels_of_the_presets(overrides: list[str], arm: str, mode: str) -> None:
    identity = identify(make_cfg(*overrides))
    assert (identity.arm, identity.mode) == (arm, mode)
