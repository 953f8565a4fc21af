"""mode=text: the serialised series, its token budget, the memoised probe features and in-context scores."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from test_hybrid import spec_of
from tsllm.config import LLMConfig
from tsllm.data import load_ucr
from tsllm.llm import decoder_of, freeze, load_llm
from tsllm.readers.text import (
    TextICLClassifier,
    TextSeriesEncoder,
    downsample,
    fit_to_budget,
    serialise,
    series_token_ids,
)

PROMPT = "Classify this series: "


@pytest.fixture(scope="module")
def tiny():
    llm, tok = load_llm(spec_of("tiny_random"))
    return freeze(llm), tok


@pytest.fixture(scope="module")
def gunpoint():
    return load_ucr("GunPoint", None)


def test_serialise_fixed_decimals_commas_and_channel_separator() -> None:
    x = np.array([[-0.001, 1.5, 2.25], [0.1, -3.0, 12.0]])
    assert serialise(x, 2) == "0.00,1.50,2.25 | 0.10,-3.00,12.00"  # no "-0.00"
    assert serialise(x[:1], 0) == "0,2,2"
    with pytest.raises(ValueError, match="reader.decimals=-1"):
        serialise(x, -1)


def test_downsample_averages_windows_and_keeps_the_tail() -> None:
    x = np.array([[1.0, 2, 3, 4, 5], [0, 0, 1, 1, 7]])
    np.testing.assert_allclose(downsample(x, 2), [[1.5, 3.5, 5], [0, 1, 7]])
    assert downsample(x, 1) is x


def test_budget_picks_the_smallest_factor_that_fits(tiny, gunpoint) -> None:
    _, tok = tiny
    x = gunpoint.train.x[0]
    text, k = fit_to_budget(x, tok, prompt_ids_len=10, budget=10_000, decimals=2)
    assert (text, k) == (serialise(x, 2), 1)

    text, k = fit_to_budget(x, tok, prompt_ids_len=10, budget=300, decimals=2)
    assert k > 1 and text == serialise(downsample(x, k), 2)
    assert 10 + len(series_token_ids(tok, text)) <= 300
    assert 10 + len(series_token_ids(tok, serialise(downsample(x, k - 1), 2))) > 300


def test_budget_smaller_than_the_prompt_is_one_clear_line(tiny, gunpoint) -> None:
    llm, tok = tiny
    with pytest.raises(ValueError, match=r"^reader.token_budget=40 is smaller than the prompt \(57 tokens\)"):
        fit_to_budget(gunpoint.train.x[0], tok, prompt_ids_len=57, budget=40, decimals=2)
    with pytest.raises(ValueError, match=r"reader.token_budget=5 is smaller than the prompt \(\d+ tokens\)"):
        TextSeriesEncoder(llm, tok, PROMPT, token_budget=5)
    with pytest.raises(ValueError, match="reader.token_budget=100000 exceeds the LLM's context"):
        TextSeriesEncoder(llm, tok, PROMPT, token_budget=100_000)


@pytest.fixture(scope="module")
def tiny_gpt2():
    # Learned absolute positions: a padded row whose positions were shifted would compute something else
    # (Llama's rotary positions are shift-invariant and would hide that).
    config = {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 512}
    llm, tok = load_llm(LLMConfig(name="gpt2", random_config=config))
    return freeze(llm), tok


@pytest.mark.parametrize("arch", ["tiny", "tiny_gpt2"])
def test_probe_features_are_the_last_hidden_state_of_prompt_and_series(arch, request, gunpoint) -> None:
    llm, tok = request.getfixturevalue(arch)
    h = llm.get_input_embeddings().weight.shape[1]
    # Series of different text lengths, so batches are padded.
    x = torch.from_numpy(np.stack([*gunpoint.train.x[:4], np.zeros_like(gunpoint.train.x[0])]))
    x[1] *= 10
    p = len(tok(PROMPT.rstrip())["input_ids"])
    assert len({len(fit_to_budget(s.numpy(), tok, p, 400, 2)[0]) for s in x}) > 2
    batched = TextSeriesEncoder(llm, tok, PROMPT, token_budget=400, batch_size=4)(x)
    single = TextSeriesEncoder(llm, tok, PROMPT, token_budget=400, batch_size=1)(x)
    assert batched.shape == (5, 1, h) and batched.dtype == torch.float32
    # Left padding with a mask and shifted positions computes what each series computes alone.
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)

    text, _ = fit_to_budget(x[2].numpy(), tok, p, 400, 2)
    ids = tok(PROMPT.rstrip())["input_ids"] + series_token_ids(tok, text)
    assert tok.decode(ids) == PROMPT + text
    direct = decoder_of(llm)(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
    torch.testing.assert_close(single[2, 0], direct, atol=1e-5, rtol=1e-4)


def test_probe_reads_each_series_once_and_reloads_features_pt(tiny, gunpoint, tmp_path: Path) -> None:
    llm, tok = tiny
    x = torch.from_numpy(gunpoint.train.x[:5])
    path = tmp_path / "features.pt"
    enc = TextSeriesEncoder(llm, tok, PROMPT, token_budget=300, cache_path=path, batch_size=2)
    first = enc(x)
    assert enc.computed == 5 and path.is_file()
    again = enc(x[[4, 0, 2, 2]])  # another epoch, shuffled, with a repeat: no new LM reads
    assert enc.computed == 5
    torch.testing.assert_close(again, first[[4, 0, 2, 2]], rtol=0, atol=0)
    stats = enc.downsample_factors
    assert stats["series"] == 5 and stats["max"] > 1 and 1 < stats["mean"] <= stats["max"]

    resumed = TextSeriesEncoder(llm, tok, PROMPT, token_budget=300, cache_path=path)
    torch.testing.assert_close(resumed(x), first, rtol=0, atol=0)
    assert resumed.computed == 0 and resumed.downsample_factors == stats

    other = TextSeriesEncoder(llm, tok, "Another prompt: ", token_budget=300, cache_path=path)
    other(x[:2])
    assert other.computed == 2  # a file written under another prompt is not reused


def test_probe_features_made_during_evaluation_train_a_head(tiny, gunpoint) -> None:
    llm, tok = tiny
    enc = TextSeriesEncoder(llm, tok, PROMPT, token_budget=300)
    x = torch.from_numpy(gunpoint.train.x[:3])
    with torch.inference_mode():  # the loop's evaluator reads a split first
        enc(x)
    head = nn.Linear(64, 2)
    head(enc(x).mean(dim=1)).sum().backward()
    assert head.weight.grad is not None and enc.computed == 3


def _direct_label_log_prob(llm: nn.Module, context: list[int], label: list[int]) -> float:
    """By hand: the full causal LM on context + label, log-softmax summed at the label positions."""
    logits = llm(input_ids=torch.tensor([context + label])).logits[0]
    lp = torch.log_softmax(logits.double(), dim=-1)
    return sum(lp[len(context) - 1 + j, tok_id].item() for j, tok_id in enumerate(label))


@pytest.mark.parametrize(("labels", "cache_shots"), [(None, True), (["up", "down"], True), (None, False)],
                         ids=["indices", "multi_token", "uncached_shots"])
def test_icl_scores_equal_a_direct_log_probability(tiny, gunpoint, labels, cache_shots) -> None:
    llm, tok = tiny
    clf = TextICLClassifier(llm, tok, gunpoint.train.x, gunpoint.train.y, class_names=gunpoint.classes,
                            shots=1, seed=0, labels=labels, token_budget=400, batch_size=2,
                            cache_shots=cache_shots)
    assert not any(p.requires_grad for p in clf.parameters())
    queries = gunpoint.test.x[:3]
    logits = clf(torch.from_numpy(queries))
    assert logits.shape == (3, 2) and clf.computed == 3
    for q, row in zip(queries, logits, strict=True):
        context, k = clf.context_ids(q.astype(np.float64))
        assert len(context) + clf.max_label - 1 <= 400
        for c, label in enumerate(clf.label_ids):
            assert row[c].item() == pytest.approx(_direct_label_log_prob(llm, context, label), abs=1e-3)

    # The context is the documented text: shots drawn from TRAIN, then the query, then "Label:".
    q = queries[0].astype(np.float64)
    context, k = clf.context_ids(q)
    names = labels or ["0", "1"]
    shots = "".join(f"\nSeries: {serialise(downsample(s, k), 2)}\nLabel: {names[c]}" for s, c in clf.shots)
    assert tok.decode(context) == clf.tokenizer.decode(clf.prompt_ids) + shots + \
        f"\nSeries: {serialise(downsample(q, k), 2)}\nLabel:"
    assert sorted(c for _, c in clf.shots) == [0, 1]


def test_icl_shots_are_drawn_by_the_seed(tiny, gunpoint) -> None:
    llm, tok = tiny

    def shots(seed: int) -> list[bytes]:
        clf = TextICLClassifier(llm, tok, gunpoint.train.x, gunpoint.train.y, class_names=gunpoint.classes,
                                shots=2, seed=seed, token_budget=500)
        return [s.tobytes() for s, _ in clf.shots]

    assert shots(0) == shots(0) and shots(0) != shots(1)


def test_icl_more_shots_than_a_class_has_is_one_clear_line(tiny, gunpoint) -> None:
    llm, tok = tiny
    n = int((gunpoint.train.y == 0).sum())
    with pytest.raises(ValueError, match=rf"^reader.shots={n + 1} but class '{gunpoint.classes[0]}' has only {n} "
                                         rf"TRAIN series"):
        TextICLClassifier(llm, tok, gunpoint.train.x, gunpoint.train.y, class_names=gunpoint.classes,
                          shots=n + 1, token_budget=500)
    with pytest.raises(ValueError, match="reader.token_budget=30 is smaller than the few-shot prompt"):
        TextICLClassifier(llm, tok, gunpoint.train.x, gunpoint.train.y, class_names=gunpoint.classes,
                          token_budget=30)


@pytest.mark.slow
def test_text_probe_learns_gunpoint_with_smollm2() -> None:
    """SmolLM2 reads GunPoint as text; a linear head on its cached features beats chance (0.5)."""
    data = load_ucr("GunPoint", None)
    llm, tok = load_llm(spec_of("smollm2_135m"))
    enc = TextSeriesEncoder(freeze(llm), tok, "Classify the following series into 2 classes: ",
                            decimals=2, token_budget=512, batch_size=8)
    start = time.perf_counter()
    with torch.no_grad():
        train_f = enc(torch.from_numpy(data.train.x))[:, 0]
        test_f = enc(torch.from_numpy(data.test.x))[:, 0]
    seconds = time.perf_counter() - start
    mean, std = train_f.mean(0), train_f.std(0) + 1e-6  # TRAIN statistics only
    train_f, test_f = (train_f - mean) / std, (test_f - mean) / std
    torch.manual_seed(0)
    head = nn.Linear(train_f.shape[1], data.num_classes)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=1e-4)
    y = torch.from_numpy(data.train.y)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(head(train_f), y).backward()
        opt.step()
    acc = (head(test_f).argmax(-1).numpy() == data.test.y).mean()
    print(f"text_probe GunPoint SmolLM2: test acc {acc:.3f}, features {seconds:.0f} s for "
          f"{enc.computed} series, downsampling {enc.downsample_factors}")
    assert acc > 0.6


def test_mode_text_probe_runs_end_to_end_and_reads_each_series_once(tmp_path) -> None:
    from tsllm.data import load_ucr
    from tsllm.train import run

    from conftest import make_cfg

    cfg = make_cfg("mode=text", "llm=tiny_random", "train.epochs=2", "reader.token_budget=200")
    rec = run(cfg, run_dir=tmp_path / "run")
    data = load_ucr("ItalyPowerDemand", val_fraction=cfg.data.val_fraction, seed=0)
    distinct = {s.tobytes() for split in (data.train, data.val, data.test) for s in split.x}
    assert rec["status"] == "finished" and rec["mode"] == "text" and rec["encoder"] == "none"
    assert rec["reader_stats"]["llm_reads"] == len(distinct)  # two epochs, one read per series
    assert (tmp_path / "run" / "features.pt").is_file()
    again = run(make_cfg("mode=text", "llm=tiny_random", "train.epochs=2", "reader.token_budget=200", "seed=1"),
                run_dir=tmp_path / "other")
    assert again["reader_stats"]["llm_reads"] == len(distinct)


def test_probe_saves_its_reads_every_few_lm_batches_so_a_stop_keeps_them(tiny, gunpoint, tmp_path: Path) -> None:
    """A loader batch larger than the save interval: a failure after the first chunk keeps that chunk on disk."""
    llm, tok = tiny
    x = torch.from_numpy(gunpoint.train.x[:6])
    path = tmp_path / "features.pt"
    enc = TextSeriesEncoder(llm, tok, PROMPT, token_budget=300, cache_path=path, batch_size=1)
    enc.SAVE_EVERY_BATCHES = 2
    real, calls = enc.last_hidden, []

    def stop_on_second_chunk(seqs):
        calls.append(len(seqs))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the session ends mid-batch
        return real(seqs)

    enc.last_hidden = stop_on_second_chunk
    with pytest.raises(KeyboardInterrupt):
        enc(x)
    assert calls == [2, 2]
    resumed = TextSeriesEncoder(llm, tok, PROMPT, token_budget=300, cache_path=path, batch_size=1)
    out = resumed(x)
    assert resumed.computed == 4  # the first two reads came back from features.pt
    torch.testing.assert_close(out, TextSeriesEncoder(llm, tok, PROMPT, token_budget=300)(x), atol=1e-5, rtol=1e-4)
