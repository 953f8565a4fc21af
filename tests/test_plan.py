"""tsllm.flops and tsllm.plan: FLOP counts that agree with theory and with a real run."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tsllm import plan as P
from tsllm.data import load_ucr
from tsllm.flops import count_forward_flops, count_train_step_flops
from tsllm.train import CONF_DIR, run

from conftest import FAST, make_cfg


def test_llm_forward_is_two_flops_per_parameter_per_token() -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
                                  num_attention_heads=8, num_key_value_heads=4, vocab_size=1000)
    with torch.device("meta"):
        decoder = AutoModelForCausalLM.from_config(config).get_decoder()
        tokens = 2 * 24
        flops = count_forward_flops(decoder, inputs_embeds=torch.zeros(2, tokens // 2, 512))
    non_embedding = sum(p.numel() for p in decoder.parameters()) - decoder.embed_tokens.weight.numel()
    assert abs(flops / (2 * non_embedding * tokens) - 1) < 0.10


def test_train_step_count_leaves_the_model_as_it_was() -> None:
    model = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.BatchNorm1d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 8, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flops = count_train_step_flops(model, torch.randn(5, 1, 10), torch.tensor([0, 1, 2, 0, 1]))
    assert flops > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_expand_follows_hydra_sweep_syntax() -> None:
    plain, cells = P.expand(["-m", "encoder=mlp,cnn", "mode=standalone,hybrid", "train.lr=1e-3"])
    assert plain == ["train.lr=1e-3"]
    assert len(cells) == 4 and ["encoder=cnn", "mode=hybrid"] in cells


def test_experiment_grid_expands_with_its_sweeper_params() -> None:
    _, cells = P.expand(["experiment=paper_grid", "data.name=GunPoint"])
    assert len(cells) == 5 * 2 * 3 * 2 * 2


def test_a_single_value_on_the_command_line_replaces_the_experiments_grid() -> None:
    # Hydra runs `experiment=controls control=llm` as the llm arm only; the plan must count the same cells.
    plain, cells = P.expand(["-m", "experiment=controls", "control=llm", "data.name=GunPoint,ArrowHead"])
    assert "control=llm" in plain and len(cells) == 2
    assert not any(o.startswith("control=") for cell in cells for o in cell)
    _, grid = P.expand(["-m", "experiment=controls", "data.name=GunPoint"])
    assert len(grid) == 12  # without it, every control arm


def test_ucr2015_sizes_outside_data_root_come_from_the_table() -> None:
    names = P.dataset_names("ucr2015", None)  # only four ship with sktime
    assert len(names) == 85


@pytest.mark.parametrize("name", ["GunPoint", "ItalyPowerDemand", "ArrowHead", "OSULeaf"])
def test_bundled_sizes_match_the_shipped_data(name: str) -> None:
    row = P.sizes_table()[name]
    d = load_ucr(name, None)
    n_train = len(d.train.y) + (0 if d.val is None else len(d.val.y))
    assert (row["n_train"], row["n_test"], row["length"], row["num_classes"]) == (
        n_train, len(d.test.y), d.length, d.num_classes)


def test_llama31_8b_falls_back_to_its_published_dimensions() -> None:
    config = P._published_config("llama31_8b")
    bundled = json.loads(resources.files("tsllm").joinpath("assets/llama31_8b_config.json").read_text())
    for key, value in P.LLAMA31_8B_DIMS.items():
        assert getattr(config, key) == value == bundled.get(key, value), key


@pytest.mark.parametrize("encoder,selection", [("cnn", "val"), ("mlp", "val"), ("mlp", "min_train_loss")])
def test_plan_agrees_with_a_real_one_epoch_run(encoder: str, selection: str, tmp_path: Path) -> None:
    # min_train_loss trains on all of TRAIN (67 series, 3 steps) where val holds 13 out (54, 2 steps).
    overrides = ["mode=hybrid", "llm=tiny_random", f"encoder={encoder}", "encoder.num_tokens=2", "train.epochs=1",
                 f"train.selection={selection}", "logger=none", "data.name=ItalyPowerDemand",
                 "diagnostics=none"]  # the plan counts training and evaluation
    runs, _ = P.plan(overrides)
    assert len(runs) == 1
    counter = FlopCounterMode(display=False)
    with counter:
        record = run(make_cfg(*overrides), run_dir=tmp_path / "run")
    assert record["status"] == "finished"
    real = counter.get_total_flops()
    # The run also builds the prompt's key/value cache once; everything else must match.
    assert abs(runs["flops"].iloc[0] / real - 1) < 0.02, (runs["flops"].iloc[0], real)
    assert runs["steps"].iloc[0] == 1 * -(-record["data"]["n_train"] // 32)


def test_plan_cli_prints_cells_flops_and_hours(capsys: pytest.CaptureFixture) -> None:
    assert P.main(["--tflops", "100", "mode=standalone", "encoder=mlp,cnn", "train.epochs=2",
                   "data.name=ItalyPowerDemand"]) == 0
    out = capsys.readouterr().out
    assert "2 cells, 2 distinct runs" in out and "2 runs measured here with --jobs 1" in out


def test_plan_beside_records_gives_each_finished_runs_wall_time(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    record = run(make_cfg("mode=standalone", "encoder=mlp"), run_dir=tmp_path / "runs" / "mlp")
    overrides = [*FAST, "mode=standalone", "encoder=mlp,cnn"]  # the cnn cell has no record
    assert P.main(["--tflops", "1", "--records", str(tmp_path / "runs"), *overrides]) == 0
    out = capsys.readouterr().out
    assert f"records: 1 of 2 finished, {record['wall_seconds'] / 3600:.3g} real hours (0 partial" in out
    runs, _ = P.plan(overrides)
    matched = P.with_records(runs, tmp_path / "runs").set_index("encoder")
    assert matched.loc["mlp", "real_hours"] == pytest.approx(record["wall_seconds"] / 3600)
    assert math.isnan(matched.loc["cnn", "real_hours"]) and not matched.loc["mlp", "partial"]


def test_plan_names_an_unknown_dataset(caplog: pytest.LogCaptureFixture) -> None:
    assert P.main(["--tflops", "1", "data.name=NoSuchSet"]) == 2
    assert "NoSuchSet" in caplog.text


def test_llama31_8b_step_is_counted_on_the_meta_device() -> None:
    # Not downloadable here: built from its published config on the meta device, no weights.
    runs, notes = P.plan(["mode=hybrid", "llm=llama31_8b", "encoder=mlp", "encoder.num_tokens=4",
                          "data.name=GunPoint", "train.epochs=1"])
    assert any("counted on the meta device" in n for n in notes)
    non_embedding = 8.03e9 - 2 * 128256 * 4096  # input table and lm_head are not run by the reader
    tokens = 32 * (4 + 1)  # batch x (latents + suffix); the prompt is cached
    # forward 2 N t, backward to the latents (no weight gradients: frozen) another 2 N t
    assert abs(runs["flops_per_step"].iloc[0] / (4 * non_embedding * tokens) - 1) < 0.10


def test_a_standalone_run_whose_llm_config_is_not_here_is_costed_not_built() -> None:
    # Its latent size is Llama-3.1-8B's hidden size, whose config is not cached here: timing it would need to
    # build it (it used to end the whole plan in a BackboneError); it is costed from FLOPs and says so.
    runs, notes = P.plan(["mode=standalone", "llm=llama31_8b", "encoder=mlp", "data.name=GunPoint",
                          "train.epochs=1"])
    assert len(runs) == 1 and runs["flops_per_step"].iloc[0] > 0
    assert any("standalone runs under it" in n for n in notes)


def test_bundled_ucr2015_sizes_match_the_offline_archive() -> None:
    """The planner's bundled sizes equal the real files for the datasets that are here (evidence16).

    All 57 UCR-2015 members of the offline packages matched when this was written (2026-11-25).
    """
    import json
    from importlib import resources

    from omegaconf import OmegaConf

    from tsllm.data import load_ucr

    names = OmegaConf.load(Path(CONF_DIR) / "datasets" / "evidence16.yaml").datasets.names
    sizes = json.loads(resources.files("tsllm").joinpath("assets/ucr2015_sizes.json").read_text())["datasets"]
    for name in names:
        d = load_ucr(name, None, val_fraction=0.0)
        real = {"n_train": len(d.train.y), "n_test": len(d.test.y), "length": d.length, "num_classes": d.num_classes}
        assert {k: sizes[name][k] for k in real} == real, name


@pytest.mark.parametrize("reader", ["text_probe", "text_icl"])
def test_plan_of_the_text_arm_agrees_with_a_real_run(reader: str, tmp_path: Path) -> None:
    # The text arm has no encoder: one LLM forward per series read (TRAIN too for the probe), whatever
    # the epochs. The plan writes a standard-normal series of the dataset's shape; the data is z-normalised.
    overrides = ["mode=text", f"reader={reader}", "reader.token_budget=512", "llm=tiny_random", "train.epochs=2",
                 "logger=none", "data.name=GunPoint", "diagnostics=none"]  # 150 points: downsampled to fit
    runs, _ = P.plan(overrides)
    assert len(runs) == 1 and runs["mode"].iloc[0] == "text"
    counter = FlopCounterMode(display=False)
    with counter:
        record = run(make_cfg(*overrides), run_dir=tmp_path / "run")
    assert record["status"] == "finished"
    real = counter.get_total_flops()
    # ICL: the plan shares one downsampling factor evenly between shots and query, the run fits the whole
    # context, so the token counts differ a little either way.
    low, high = (0.9, 1.1) if reader == "text_probe" else (0.8, 1.25)
    assert low < runs["flops"].iloc[0] / real < high, (runs["flops"].iloc[0], real)


def test_plan_json_gives_each_run_measured_seconds_for_scripts(capsys: pytest.CaptureFixture) -> None:
    assert P.main(["--json", "mode=standalone", "encoder=mlp", "train.epochs=3", "data.name=ItalyPowerDemand,GunPoint",
                   "-m", "diagnostics=none"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [r["dataset"] for r in plan["runs"]] == ["ItalyPowerDemand", "GunPoint"]
    assert all(r["hours_from"] == "measured" and r["seconds"] > 0 for r in plan["runs"])
    assert plan["hours"] == pytest.approx(sum(r["seconds"] for r in plan["runs"]) / 3600)


def test_jobs_measure_runs_at_once_each_on_its_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from tsllm.loop import available_cores

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    runs, _ = P.plan(["mode=standalone", "encoder=mlp", "train.epochs=2", "data.name=ItalyPowerDemand,GunPoint",
                      "diagnostics=none"], jobs=2, repeats=1)
    assert list(runs["threads"]) == [max(1, available_cores() // 2)] * 2
    assert (runs["seconds"] > 0).all()


def test_the_dry_run_times_each_kind_of_step_a_run_takes() -> None:
    from omegaconf import OmegaConf

    from tsllm.build import load_data

    cfg = make_cfg("mode=hybrid", "llm=tiny_random", "encoder=cnn", "encoder.channels=4", "train.epochs=5")
    timing = P.measure(cfg, load_data(cfg), None, 0.0, repeats=1)
    assert set(timing.steps) == {32, 54 - 32}  # ItalyPowerDemand: 54 TRAIN series after its validation share
    # every kind of work a run does is timed (a time, not a speed, is checked: the machine may be loaded)
    assert min(timing.bn_refresh, timing.eval_per_series, timing.checkpoint, timing.diagnostics) > 0
    shape = P.Shape(54, 13, 1029, 1, 24, 2, "data")
    one, two = (timing.run_seconds(OmegaConf.merge(cfg, {"train": {"epochs": e}}), shape, True) for e in (1, 2))
    per_epoch = sum(timing.steps.values()) + timing.bn_refresh + timing.eval_per_call + 13 * timing.eval_per_series \
        + timing.checkpoint
    final_extra = timing.eval_per_call + 1029 * timing.eval_per_series  # TEST twice beyond one epoch, once at one
    assert two - one == pytest.approx(per_epoch + final_extra)
