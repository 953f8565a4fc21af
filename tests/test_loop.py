"""The training loop's options: optimiser, stopping, selection rules, frozen models, checkpoints, progress, cost."""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
import stat
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from tsllm.build import build_model
from tsllm.config import TrainConfig
from tsllm.data import load_ucr
from tsllm.loop import fit
from tsllm.records import RunDirConflict
from tsllm.train import run

from conftest import make_cfg

MLP = ["encoder=mlp", "encoder.hidden=16", "llm=tiny_random"]


def _data(val_fraction: float = 0.2):
    return load_ucr("ItalyPowerDemand", None, normalise="znorm", val_fraction=val_fraction, seed=0,
                    missing="interpolate")


def _model(*overrides: str, base: tuple[str, ...] = tuple(MLP)):
    cfg = make_cfg(*base, *overrides)
    data = _data()
    return build_model(cfg, data), data


def test_adamw_is_used_when_asked(run_dir: Path) -> None:
    run(make_cfg(*MLP, "train.optimizer=adamw", "train.weight_decay=1e-5"), run_dir=run_dir)
    groups = torch.load(run_dir / "checkpoint_last.pt", weights_only=True)["optimizer"]["param_groups"]
    assert groups[0]["weight_decay"] == 1e-5 and groups[0]["decoupled_weight_decay"] is True


def test_stop_at_train_acc_stops_at_the_first_epoch_reaching_it(run_dir: Path) -> None:
    rec = run(make_cfg(*MLP, "train.epochs=40", "train.lr=0.01", "train.stop_at_train_acc=0.9"), run_dir=run_dir)
    accs = [h["train_acc"] for h in rec["history"]]
    assert rec["epochs_run"] < 40 and accs[-1] >= 0.9 and all(a < 0.9 for a in accs[:-1])
    assert rec["stop_reason"] == "train_acc" and rec["stopped_early"]


def test_min_train_loss_trains_on_all_of_train_and_picks_the_argmin_epoch(run_dir: Path) -> None:
    rec = run(make_cfg(*MLP, "train.epochs=5", "train.lr=0.05", "train.selection=min_train_loss"),
              run_dir=run_dir)
    assert rec["data"]["n_train"] == 67 and rec["data"]["n_val"] == 0  # every ItalyPowerDemand TRAIN series
    losses = [h["train_loss"] for h in rec["history"]]
    assert rec["best_epoch"] == 1 + losses.index(min(losses))
    assert rec["selection"] == "min_train_loss" and rec["selection_rule"] == "min_train_loss"
    assert rec["val_acc"] is None and all("test" not in k for h in rec["history"] for k in h)


def test_last_selects_the_last_epoch(run_dir: Path) -> None:
    rec = run(make_cfg(*MLP, "train.epochs=3", "train.selection=last"), run_dir=run_dir)
    assert rec["best_epoch"] == 3 and rec["test_acc"] == rec["test_acc_last_epoch"]
    assert rec["selection_rule"] == "last" and rec["val_acc"] is not None


def test_unknown_selection_rule_is_one_line_with_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"^train.selection='best': expected one of val, min_train_loss, last$"):
        TrainConfig(selection="best")


def test_study_figures_are_optimistic_and_named(run_dir: Path) -> None:
    rec = run(make_cfg(*MLP, "train.epochs=4", "train.protocol=study_best_test"), run_dir=run_dir)
    hist = rec["history"]
    assert rec["study_best_test_acc"] == max(h["test_acc_optimistic"] for h in hist)
    at_min_loss = min(hist, key=lambda h: h["train_loss"])["test_acc_optimistic"]
    assert rec["study_min_train_loss_test_acc"] == at_min_loss


def test_a_model_with_nothing_to_train_is_evaluated_once(tmp_path: Path) -> None:
    model, data = _model()
    model.requires_grad_(False)
    res = fit(model, data, TrainConfig(epochs=3), seed=0, run_dir=tmp_path)
    assert res.epochs_run == 0 and res.selection == "nothing_trains" and res.history == []
    assert res.test_acc == res.test_acc_last_epoch and res.val_acc is not None
    assert not (tmp_path / "checkpoint_last.pt").exists()


def test_checkpoints_load_weights_only_and_files_are_group_readable(run_dir: Path) -> None:
    run(make_cfg(*MLP), run_dir=run_dir)
    for name in ("checkpoint_last.pt", "checkpoint_best.pt", "record.json"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o664, name
    ckpt = torch.load(run_dir / "checkpoint_last.pt", weights_only=True)
    assert set(ckpt) == {"model", "optimizer", "state"}


def test_trainable_state_leaves_the_frozen_llm_out_and_keeps_batchnorm(tmp_path: Path) -> None:
    model, _ = _model("mode=hybrid", "llm=tiny_random", "encoder=cnn", "encoder.channels=4", base=())
    state = model.trainable_state()
    assert not any(k.startswith("reader.llm") for k in state)
    assert any(k.endswith("running_mean") for k in state) and "head.weight" in state
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable <= set(state)
    model.load_trainable_state(state)
    with pytest.raises(RuntimeError, match=r"missing keys \['head.bias'\].*unexpected keys \['extra'\]"):
        model.load_trainable_state({**{k: v for k, v in state.items() if k != "head.bias"}, "extra": state["head.bias"]})


def test_resume_from_another_models_checkpoint_fails_naming_the_run_dir(tmp_path: Path) -> None:
    model, data = _model()
    fit(model, data, TrainConfig(epochs=1), seed=0, run_dir=tmp_path)
    other, _ = _model("encoder.hidden=8")
    with pytest.raises(RunDirConflict, match=str(tmp_path)):
        fit(other, data, TrainConfig(epochs=2), seed=0, run_dir=tmp_path)


def test_every_epoch_logs_one_progress_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model, data = _model()
    with caplog.at_level(logging.INFO, logger="tsllm.loop"):
        fit(model, data, TrainConfig(epochs=3), seed=0, run_dir=tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 3 and lines[1].startswith("epoch 2/3: train loss ")
    assert re.fullmatch(r"epoch 2/3: train loss \d\.\d{4} acc \d\.\d{4}, val acc \d\.\d{4}, [\d.]+ s", lines[1])


def test_cost_is_counted_once_and_reports_llm_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tsllm.loop as loop

    entered = []
    real = loop.FlopCounterMode

    def counting(*args, **kwargs):
        entered.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "FlopCounterMode", counting)
    model, data = _model()
    model.reader.tokens_per_example = 7
    fresh = copy.deepcopy(model)
    res = fit(model, data, TrainConfig(epochs=2, batch_size=16), seed=0, run_dir=tmp_path)
    assert len(entered) == 1
    with real(display=False) as counter:  # the same step counted independently
        x = torch.from_numpy(data.train.x[:16])
        torch.nn.functional.cross_entropy(fresh(x), torch.from_numpy(data.train.y[:16])).backward()
    assert res.cost["flops_per_step"] == counter.get_total_flops() > 0
    assert res.cost["llm_tokens_per_step"] == 7 * 16 and res.cost["seconds_per_epoch"] > 0
    assert res.cost["peak_rss_mib"] > 10
    assert (res.cost["peak_accelerator_mib"] is None) == (not torch.cuda.is_available())


def test_record_carries_cost(run_dir: Path) -> None:
    rec = run(make_cfg(*MLP), run_dir=run_dir)
    assert rec["cost"]["flops_per_step"] > 0 and rec["cost"]["llm_tokens_per_step"] is None


def test_train_schema_matches_the_yaml() -> None:
    cfg = make_cfg()
    assert set(OmegaConf.to_container(cfg.train)) == {f.name for f in dataclasses.fields(TrainConfig)}


def test_flops_per_step_leave_out_the_one_off_prompt_cache(tmp_path: Path) -> None:
    model, data = _model("mode=hybrid", "llm=tiny_random", "encoder=mlp", "encoder.hidden=8", base=())
    fresh = copy.deepcopy(model)
    res = fit(model, data, TrainConfig(epochs=1, batch_size=16), seed=0, run_dir=tmp_path)
    x, y = torch.from_numpy(data.train.x[:16]), torch.from_numpy(data.train.y[:16])
    fresh.eval()
    with torch.no_grad():
        fresh(x[:1])  # builds the prompt's key/value cache outside the count
    fresh.train()
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(fresh(x), y).backward()
    assert res.cost["flops_per_step"] == counter.get_total_flops()


def test_a_resumed_run_that_had_stopped_stays_stopped(tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=40, lr=0.01, stop_at_train_acc=0.9)
    model, data = _model()
    first = fit(model, data, cfg, seed=0, run_dir=tmp_path)
    assert first.stop_reason == "train_acc" and first.epochs_run < 40
    again, _ = _model()
    second = fit(again, data, cfg, seed=0, run_dir=tmp_path)
    assert second.epochs_run == first.epochs_run and second.history == first.history
    assert second.test_acc == first.test_acc


def test_a_resumed_runs_earlier_sessions_are_timed_unless_its_checkpoint_predates_that(tmp_path: Path) -> None:
    model, data = _model()
    first = fit(model, data, TrainConfig(epochs=2), seed=0, run_dir=tmp_path)
    assert first.earlier_sessions_seconds == 0.0
    ckpt = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    (session,) = ckpt["state"]["session_seconds"]  # fit's start to its last checkpoint
    assert 0 < session <= first.seconds
    again, _ = _model()
    second = fit(again, data, TrainConfig(epochs=3), seed=0, run_dir=tmp_path)
    assert second.resumed_from_epoch == 2 and second.earlier_sessions_seconds == session
    # a checkpoint written before sessions were timed: the earlier time is unknown, not zero
    ckpt = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    del ckpt["state"]["session_seconds"]
    torch.save(ckpt, tmp_path / "checkpoint_last.pt")
    third, _ = _model()
    assert fit(third, data, TrainConfig(epochs=4), seed=0, run_dir=tmp_path).earlier_sessions_seconds is None
