"""The one builder: every caller builds a run's splits and model as training does."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from tsllm.build import build, load_data
from tsllm.train import run

from conftest import make_cfg

ROOT = Path(__file__).parents[1]


def test_nothing_but_the_builder_spells_load_ucr() -> None:
    # The benchmarks once passed data.val_fraction where a run held out none (train.selection=min_train_loss).
    callers = [p for p in [*(ROOT / "src").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")]
               if re.search(r"\bload_ucr\(", p.read_text()) and p.parent.name != "data" and p.name != "build.py"]
    assert callers == []


def test_a_benchmark_and_a_training_run_of_one_config_build_the_same_splits(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench_encoders
    finally:
        sys.path.pop(0)
    overrides = ["train.selection=min_train_loss", "logger=none", "diagnostics=none"]
    args = argparse.Namespace(dataset="ItalyPowerDemand", seed=1, epochs=1, warmup=0, eval_repeats=1, set=overrides)
    bench = bench_encoders.bench_one("mlp", args)["data"]
    record = run(make_cfg("encoder=mlp", "seed=1", *overrides), run_dir=tmp_path / "run")
    assert bench.val is None and record["data"]["n_val"] == 0  # all of TRAIN, as min_train_loss trains
    assert len(bench.train.y) == record["data"]["n_train"] == 67
    assert bench.meta["sha256"] == record["data"]["sha256"]


def test_build_is_seeded_as_a_run_and_takes_a_handed_in_llm() -> None:
    cfg = make_cfg("mode=hybrid", "llm=tiny_random", "encoder=cnn", "encoder.channels=4")
    first, again = build(cfg), build(cfg)
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(),
                                                 strict=True))
    llm = (first.model.reader.llm, first.model.reader.tokenizer)
    shared = build(cfg, llm=llm, data=first.data)
    assert shared.model.reader.llm is llm[0] and shared.identity.arm == "llm[weights=random]"


def test_a_lora_reader_copies_an_llm_handed_in_before_adding_adapters() -> None:
    base = build(make_cfg("mode=hybrid", "llm=tiny_random"))
    llm = (base.model.reader.llm, base.model.reader.tokenizer)
    lora = build(make_cfg("mode=lora", "llm=tiny_random"), llm=llm, data=base.data)
    assert lora.model.reader.llm is not llm[0]
    assert not any("lora" in name for name, _ in llm[0].named_parameters())  # the shared LLM is untouched


def test_load_data_holds_out_the_validation_share_the_run_holds_out() -> None:
    assert load_data(make_cfg("train.selection=min_train_loss")).val is None
    held = load_data(make_cfg("data.val_fraction=0.3"))
    assert held.val is not None and len(held.val.y) == 20  # 30 % of ItalyPowerDemand's 67 TRAIN series
