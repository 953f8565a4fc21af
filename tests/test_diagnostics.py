"""Diagnostics of finished runs: pure functions, the LLM pass, the runner, the CLI and the notebook."""

from __future__ import annotations

import json
import logging
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tsllm.config import LLMConfig
from tsllm.data import DatasetSplits, Split
from tsllm.diagnose import main as diagnose_main
from tsllm.diagnostics import (
    SPANS,
    DiagnosticsError,
    collapse,
    diagnostics_table,
    layer_chosen_without_test,
    layer_probes,
    linear_cka,
    llm_states,
    load_run,
    nearest_tokens,
    norm_stats,
    reader_sequence,
    resolve_level,
    run_diagnostics,
    runner,
    summary_scalars,
    top1_agreement,
)
from tsllm.diagnostics.llm_pass import EXTRA, eager_attention
from tsllm.diagnostics.runner import _states
from tsllm.llm import freeze, load_llm
from tsllm.readers import LLMReader
from tsllm.train import run

from conftest import make_cfg

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "results" / "notebooks" / "04_diagnostics.ipynb"
PROMPT = "Classify these: "


@pytest.fixture(scope="module")
def reader() -> LLMReader:
    cfg = make_cfg("llm=tiny_random").llm  # composed: the yaml's defaults list is not an llm key
    llm, tok = load_llm(LLMConfig.from_cfg(OmegaConf.to_container(cfg, resolve=True)), seed=0)
    return LLMReader(freeze(llm), tok, num_tokens=4, template=PROMPT, prefix_cache=True).eval()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished hybrid run and the standalone run of the same encoder, dataset and seed (1 epoch each)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for mode in ("hybrid", "standalone"):
        out[mode] = root / mode
        run(make_cfg(f"mode={mode}", "llm=tiny_random", "encoder=cnn", "encoder.num_tokens=3"), run_dir=out[mode])
    return out


# ----------------------------------------------------------------------------- pure functions


def test_latents_equal_to_token_embeddings_have_those_tokens_nearest(reader: LLMReader) -> None:
    table = reader.embed.weight.detach()
    ids = torch.tensor([[5, 70, 200], [33, 33, 101]])
    near, cos = nearest_tokens(table[ids], table, k=5)
    assert torch.equal(near[..., 0], ids)
    assert torch.allclose(cos[..., 0], torch.ones_like(cos[..., 0]), atol=1e-5)
    assert (cos[..., 1:] < 1 - 1e-4).all()


def test_norm_ratio_and_percentile() -> None:
    table = torch.diag(torch.arange(1.0, 11.0))  # norms 1..10, median 5.5
    stats = norm_stats(torch.full((4, 1, 10), 0.0).index_fill(2, torch.tensor([0]), 11.0), table)
    assert stats["ratio_to_median"] == pytest.approx([2.0]) and stats["percentile"] == [100.0]
    stats = norm_stats(torch.zeros(4, 1, 10).index_fill(2, torch.tensor([0]), 0.5), table)
    assert stats["ratio_to_median"] == pytest.approx([0.5 / 5.5]) and stats["percentile"] == [0.0]


def test_collapse_is_one_for_identical_tokens_and_low_for_orthogonal_ones() -> None:
    assert collapse(torch.ones(3, 4, 8))["mean_pairwise_cosine"] == pytest.approx(1.0)
    assert collapse(torch.eye(4)[None].repeat(2, 1, 1))["mean_pairwise_cosine"] == pytest.approx(0.0)
    assert collapse(torch.ones(3, 1, 8))["mean_pairwise_cosine"] is None


def test_top1_agreement_across_series_and_classes() -> None:
    top1 = np.array([[7, 1], [7, 2], [7, 3], [9, 4]])
    labels = np.array([0, 0, 1, 1])
    agreement = top1_agreement(top1, labels)
    assert agreement["across_series"][0] == 0.75 and agreement["across_series"][1] == 0.25
    assert agreement["across_classes"][0] == 1.0  # class 1's tie (7 vs 9) resolves to the first seen: 7


def test_cka_identity_rotation_and_noise() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 20))
    q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, x @ q) == pytest.approx(1.0)
    assert linear_cka(x, rng.normal(size=(500, 20))) < 0.1


def test_cka_refuses_different_examples() -> None:
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(np.zeros((3, 2)), np.zeros((4, 2)))


# ----------------------------------------------------------------------------- the LLM pass


def test_read_state_is_what_the_reader_returns(reader: LLMReader) -> None:
    latents = torch.randn(3, 2, reader.hidden_size)
    states = llm_states(reader, latents)
    assert len(states.read) == reader.llm.config.num_hidden_layers + 1
    assert np.allclose(states.read[-1], reader(latents).detach().numpy(), atol=1e-4)


def test_sequence_spans_cover_prompt_latents_and_suffix(reader: LLMReader) -> None:
    latents = torch.randn(2, 3, reader.hidden_size)
    embeds, spans = reader_sequence(reader, latents)
    p = reader.prompt_ids.numel()
    assert embeds.shape == (2, p + 3 + 1, reader.hidden_size)
    assert spans["latents"] == slice(p, p + 3) and torch.equal(embeds[:, spans["latents"]], latents)


def test_reader_sequence_is_used_when_the_reader_has_one(reader: LLMReader) -> None:
    class WithSequence(torch.nn.Module):
        def sequence(self, latents):
            return torch.zeros(latents.shape[0], 6, 4), {"bos": slice(0, 1), "prompt": slice(0, 3),
                                                        "latents": slice(3, 5), "suffix": slice(5, 6)}

    embeds, spans = reader_sequence(WithSequence(), torch.zeros(2, 2, 4))
    assert embeds.shape == (2, 6, 4)  # its own sequence (which aligns), not rebuilt and not aligned twice
    assert spans["prompt"] == slice(1, 3)  # disjoint from BOS, so the shares add up to 1


def test_sequence_applies_the_readers_alignment(reader: LLMReader, monkeypatch: pytest.MonkeyPatch) -> None:
    latents = torch.randn(2, 3, reader.hidden_size)
    monkeypatch.setattr(reader, "align_latents", lambda z: 2 * z, raising=False)
    embeds, spans = reader_sequence(reader, latents)
    assert torch.allclose(embeds[:, spans["latents"]], 2 * latents)


def test_attention_shares_sum_to_one_and_eager_is_restored(reader: LLMReader) -> None:
    before = reader.llm.config._attn_implementation
    with eager_attention(reader.llm):
        states = llm_states(reader, torch.randn(4, 3, reader.hidden_size), attention=True, lens_k=3)
    assert reader.llm.config._attn_implementation == before
    assert states.attention.shape == (4, reader.llm.config.num_hidden_layers, len(SPANS) + 1)
    assert np.allclose(states.attention[..., :len(SPANS)].sum(axis=-1), 1.0, atol=1e-5)
    # byte tokenizer: no BOS, so the first position belongs to the prompt
    assert (states.attention[..., 0] == 0).all() and (states.attention[..., 1] >= states.attention[..., -1]).all()
    assert (states.attention[..., SPANS.index("latents")] > 0).all()
    assert states.lens_ids.shape == (reader.llm.config.num_hidden_layers + 1, 4, 3)


def test_probes_one_per_layer_and_separable_at_the_last(reader: LLMReader) -> None:
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(reader.hidden_size, generator=gen)

    def make(n: int) -> tuple[torch.Tensor, np.ndarray]:
        y = torch.arange(n) % 2
        latents = torch.randn(n, 2, reader.hidden_size, generator=gen) * 0.3
        latents += (2 * y - 1).float()[:, None, None] * direction  # the class is one direction, by construction
        return latents, y.numpy()

    (train, train_y), (test, test_y) = make(80), make(80)
    tr, te = _states(reader, train, 32), _states(reader, test, 32)
    accs = layer_probes(tr["read"], train_y, te["read"], test_y)
    assert len(accs) == reader.llm.config.num_hidden_layers + 1
    # At the embeddings (layer 0) the read position holds its own token, the same for every series (causal:
    # it has not yet seen the latents), so the probe can only name one class: half of this balanced TEST.
    # From layer 1 on it has read them, and the class is one direction: every TEST series is right.
    assert accs == pytest.approx([0.5] + [1.0] * reader.llm.config.num_hidden_layers)
    # Scored on TEST, not TRAIN: with TEST's labels shuffled a perfect probe agrees with them only by chance.
    shuffled = np.random.default_rng(0).permutation(test_y)
    chance = float(np.mean(shuffled == test_y))
    assert layer_probes(tr["read"], train_y, te["read"], shuffled)[1:] == pytest.approx([chance] * (len(accs) - 1))
    assert 0.4 < chance < 0.6


def test_the_probe_layer_is_chosen_on_validation_or_within_train_never_on_test() -> None:
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3

    def layers(n: int, readable: int) -> list[np.ndarray]:  # the class is readable at one layer only
        out = [rng.normal(size=(n, 8)) for _ in range(3)]
        out[readable][:, 0] += 6 * (np.arange(n) % 3)
        return out

    layer, scores, how = layer_chosen_without_test(layers(60, 1), y)
    assert (layer, how) == (1, "5-fold CV within TRAIN") and scores[1] > 0.8 > 0.6 > max(scores[0], scores[2])
    # A validation split decides when there is one: here it reads the class at layer 2, TRAIN at layer 1 and 2.
    train = layers(60, 1)
    train[2][:, 0] += 6 * y
    layer, scores, how = layer_chosen_without_test(train, y, layers(60, 2), y)
    assert (layer, how) == (2, "validation")
    # Scored on validation, not TRAIN: layer 1, which only TRAIN reads, is at chance (1/3) there.
    assert scores[2] > 0.9 and max(scores[0], scores[1]) < 0.5
    # A class with one series sits out of the CV and the others still choose (DiatomSizeReduction's TRAIN)...
    lone = y.copy()
    lone[-1] = 3
    layer, scores, _ = layer_chosen_without_test(layers(60, 1), lone)
    assert layer == 1 and scores[1] > 0.8
    # ...but with one class left there is nothing to choose on.
    assert layer_chosen_without_test(layers(60, 1), np.r_[np.zeros(59, int), 1])[0] is None


def test_the_runner_reports_the_layer_chosen_without_test_where_test_would_choose_another(
        reader: LLMReader, monkeypatch: pytest.MonkeyPatch) -> None:
    """The class reads best at layer 2 on TEST and at layer 1 without TEST: the runner must report layer 1."""
    rng = np.random.default_rng(0)
    n_layers = 3

    def split(n: int, strength: list[float]) -> tuple[torch.Tensor, np.ndarray]:
        """Latents whose position i holds layer i's features; strength[i] sets how far apart the classes sit there."""
        y = np.arange(n) % 2
        lat = rng.normal(size=(n, n_layers, 8))
        lat[:, :, 0] += np.outer(2 * y - 1, strength)
        return torch.tensor(lat, dtype=torch.float32), y

    def states(_reader: LLMReader, lat: torch.Tensor, _batch: int, attention: bool = False,
               lens_k: int = 5) -> dict:
        """Stands for the LLM pass: its layers are the features placed in the latents."""
        layers = [lat[:, i].numpy() for i in range(n_layers)]
        out = {"read": layers, "latent_mean": layers}
        if attention:
            out["attention"] = np.full((len(lat), n_layers, len(SPANS) + len(EXTRA)), 0.25)
            out["lens_ids"] = np.zeros((n_layers, len(lat), lens_k), dtype=int)
        return out

    monkeypatch.setattr(runner, "_states", states)
    train_lat, train_y = split(60, [0.0, 4.0, 1.0])  # clear at layer 1, faint at layer 2
    val_lat, val_y = split(40, [0.0, 4.0, 0.0])
    test_lat, test_y = split(60, [0.0, 0.0, 4.0])  # TEST reads the class at layer 2 only
    model = SimpleNamespace(reader=reader)
    for val in (val_lat, None):  # chosen on validation, then (no validation split) by CV within TRAIN
        data = DatasetSplits(name="toy", train=Split(train_lat.numpy(), train_y), test=Split(test_lat.numpy(), test_y),
                             val=None if val is None else Split(val.numpy(), val_y), classes=["a", "b"], meta={})
        out, _ = runner.full(model, data, train_lat, test_lat, None, 64, val_lat=val)
        for kind in ("read", "latent_mean"):
            curve, chosen = out["probes"][kind], out["probes"][f"{kind}_chosen_without_test"]
            assert int(np.argmax(curve)) == 2 and curve[2] > curve[1] + 0.3  # choosing on TEST would take layer 2
            assert chosen["layer"] == 1 and chosen["test"] == curve[1]
            assert chosen["by"] == ("validation" if val is not None else "5-fold CV within TRAIN")


# ----------------------------------------------------------------------------- finished runs


def test_diagnostics_of_a_finished_run_are_identical_twice(runs: dict[str, Path]) -> None:
    model, data, _ = load_run(runs["hybrid"])
    first = run_diagnostics(model, data, runs["hybrid"], "full", max_series=40)
    text = (runs["hybrid"] / "diagnostics.json").read_text()
    model, data, _ = load_run(runs["hybrid"])
    assert run_diagnostics(model, data, runs["hybrid"], "full", max_series=40) == first
    assert (runs["hybrid"] / "diagnostics.json").read_text() == text
    # written like the record: through a renamed temporary file (none left behind), readable by the group
    assert stat.S_IMODE((runs["hybrid"] / "diagnostics.json").stat().st_mode) == 0o664
    assert not list(runs["hybrid"].glob(".diagnostics.*"))
    assert (runs["hybrid"] / "diagnostics_tsne.png").stat().st_size > 1000
    n_layers = model.reader.llm.config.num_hidden_layers
    assert len(first["probes"]["read"]) == len(first["probes"]["latent_mean"]) == n_layers + 1
    assert len(first["logit_lens"]) == n_layers + 1 and len(first["nearest_tokens"]["per_position"]) == 3


def test_a_run_on_all_of_train_is_diagnosed_on_the_splits_it_trained_on(tmp_path: Path,
                                                                        runs: dict[str, Path]) -> None:
    # min_train_loss trains on all of TRAIN: rebuilding it with the data's 20 % validation share would fit
    # the probes on a TRAIN the run never had, and choose their layer on series it trained on.
    record = run(make_cfg("mode=hybrid", "llm=tiny_random", "encoder=mlp", "train.selection=min_train_loss"),
                 run_dir=tmp_path / "all_train")
    model, data, _ = load_run(tmp_path / "all_train")
    assert data.val is None and len(data.train.y) == record["data"]["n_train"] == 67
    chosen = run_diagnostics(model, data, tmp_path / "all_train", "full")["probes"]["read_chosen_without_test"]
    assert chosen["by"] == "5-fold CV within TRAIN"
    model, data, _ = load_run(runs["hybrid"])  # a validation-selected run chooses on its validation split
    assert run_diagnostics(model, data, runs["hybrid"], "full", max_series=40)["probes"][
        "read_chosen_without_test"]["by"] == "validation"


def test_summary_scalars_are_flat_floats(runs: dict[str, Path]) -> None:
    model, data, _ = load_run(runs["hybrid"])
    scalars = summary_scalars(run_diagnostics(model, data, runs["hybrid"], "full", max_series=40))
    n_layers = model.reader.llm.config.num_hidden_layers
    assert all(isinstance(v, float) for v in scalars.values())
    assert {f"diag_probe_read_L{i}" for i in range(n_layers + 1)} <= set(scalars)
    assert {"diag_norm_ratio_median", "diag_attn_latents_mean", "diag_cka_latents_read"} <= set(scalars)
    layer = int(scalars["diag_probe_read_chosen_layer"])
    assert 0 <= layer <= n_layers
    assert scalars["diag_probe_read_chosen"] == scalars[f"diag_probe_read_L{layer}"]


def test_level_auto_is_basic_for_llm_readers_and_none_otherwise(runs: dict[str, Path]) -> None:
    hybrid, _, _ = load_run(runs["hybrid"])
    standalone, data, _ = load_run(runs["standalone"])
    assert resolve_level("auto", hybrid) == "basic" and resolve_level("auto", standalone) == "none"
    assert run_diagnostics(standalone, data, runs["standalone"], "auto") == {}
    with pytest.raises(DiagnosticsError, match="diagnostics.level='most'"):
        resolve_level("most", hybrid)


def test_cli_pairs_hybrid_with_standalone_and_writes_the_table(runs: dict[str, Path], tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    table = tmp_path / "diag.csv"
    assert diagnose_main([str(runs["hybrid"]), str(runs["standalone"]), "--level", "full", "--max-series", "40",
                          "--table", str(table)]) == 0
    assert "standalone run (no LLM reads its latents)" in caplog.text and "attention mass" in caplog.text
    hybrid = json.loads((runs["hybrid"] / "diagnostics.json").read_text())
    assert hybrid["cka_vs_standalone"]["run_dir"] == str(runs["standalone"])
    standalone = json.loads((runs["standalone"] / "diagnostics.json").read_text())
    assert "attention" not in standalone and "attention mass" in standalone["not_applicable"]
    assert "pooled_latents" in standalone["probes"] and "latent_norm" in standalone["norms"]
    df = diagnostics_table(runs["hybrid"].parent)
    assert len(df) == 2 and set(df["mode"]) == {"hybrid", "standalone"}
    assert table.is_file()


def test_missing_record_or_checkpoint_is_one_line(runs: dict[str, Path], tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(DiagnosticsError, match=r"empty: no record\.json"):
        load_run(tmp_path / "empty")
    copy = tmp_path / "copy"
    shutil.copytree(runs["hybrid"], copy)
    record = json.loads((copy / "record.json").read_text())
    (copy / "record.json").write_text(json.dumps({**record, "status": "running"}))
    with pytest.raises(DiagnosticsError, match="'running', not finished"):
        load_run(copy)
    (copy / "record.json").write_text(json.dumps(record))
    (copy / "checkpoint_best.pt").unlink()
    with pytest.raises(DiagnosticsError, match=r"copy: no checkpoint_best\.pt"):
        load_run(copy)
    assert diagnose_main([str(copy)]) == 2
    assert "checkpoint_best.pt" in caplog.text


def test_missing_dataset_names_the_path_the_record_holds(runs: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "moved"
    shutil.copytree(runs["hybrid"], copy)
    record = json.loads((copy / "record.json").read_text())
    record["config"]["data"]["root"] = str(tmp_path / "gone")
    record["data"]["files"]["train"] = str(tmp_path / "gone" / "ItalyPowerDemand_TRAIN.tsv")
    (copy / "record.json").write_text(json.dumps(record))
    with pytest.raises(DiagnosticsError, match=r"gone/ItalyPowerDemand_TRAIN\.tsv"):
        load_run(copy)


# ----------------------------------------------------------------------------- notebook


@pytest.fixture(scope="module")
def python3_kernel() -> str:
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix"], check=True,
                       capture_output=True, timeout=120)
    return "python3"


def test_notebook_executes_on_a_table_of_real_tiny_runs(runs: dict[str, Path], tmp_path: Path, python3_kernel: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    assert diagnose_main([str(runs["hybrid"]), str(runs["standalone"]), "--level", "full", "--max-series", "40",
                          "--table", str(tmp_path / "diag.csv")]) == 0
    monkeypatch.setenv("TSLLM_DIAG_TABLE", str(tmp_path / "diag.csv"))
    monkeypatch.setenv("TSLLM_SAVE_FIGS", "1")
    monkeypatch.setenv("TSLLM_FIG_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code")  # committed without outputs
    NotebookClient(nb, kernel_name=python3_kernel, timeout=120,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o["output_type"] == "error"]
    figures = {p.name for p in (tmp_path / "figures").glob("04_*.png")}
    assert figures == {"04_probe_curves.png", "04_norm_ratios.png", "04_attention_mass.png"}
