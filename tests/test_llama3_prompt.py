"""The Llama-3 prompt path, offline: an in-memory tokenizer with Llama-3's special tokens and post-processor
(it adds ``<|begin_of_text|>`` itself and has no pad token), under a tiny random Llama with Llama-3.1's rotary
scaling. The real tokenizer is gated; these are the rules tsllm.llm.tokens and tsllm.llm.prefix must follow
with it.
"""

from __future__ import annotations

import pytest
import torch

from tsllm.config import LLMConfig
from tsllm.llm import expanded_cache, freeze, load_llm, prompt_ids_for, prompt_token_ids, suffix_token_ids
from tsllm.readers import LLMReader

#: Llama-3's pre-tokenizer pattern (its tokenizer.json), so words and digits split as the real one splits them.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")
#: Llama-3.1's first special tokens, in its order (ids 128000-128010 there; after the small vocabulary here).
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
TEMPLATE = "Classify the following data with {num_tokens} features into {num_classes} classes: "
PROMPT = TEMPLATE.format(num_tokens=8, num_classes=3)


def llama3_tokenizer():
    """A byte-level BPE trained in memory on a few sentences, with Llama-3's pre-tokenizer, special tokens,
    BOS-adding post-processor and decoder; BOS ``<|begin_of_text|>``, EOS ``<|end_of_text|>``, no pad token."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    corpus = [PROMPT, TEMPLATE, "The capital of France is Paris.", "[PAD] padding tokens", "time series classes"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens(LLAMA3_SPECIALS)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")


@pytest.fixture(scope="module")
def llama3():
    """(tiny random Llama with Llama-3.1's rope scaling, in float64, frozen; the Llama-3 tokenizer)."""
    tok = llama3_tokenizer()
    config = dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=512,
                  rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    llm, _ = load_llm(LLMConfig(name="llama3_tiny", random_config=config, dtype="float64"))
    return freeze(llm), tok


def test_the_tokenizer_has_llama3s_special_tokens_and_adds_bos_itself() -> None:
    tok = llama3_tokenizer()
    assert tok.bos_token == "<|begin_of_text|>" and tok.eos_token == "<|end_of_text|>" and tok.pad_token_id is None
    vocab = tok.get_vocab()
    assert [vocab[t] for t in LLAMA3_SPECIALS] == list(range(vocab["<|begin_of_text|>"], len(tok)))  # the last ids
    ids = tok("Paris")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok("Paris", add_special_tokens=False)["input_ids"] == ids[1:]


def test_the_prompt_has_exactly_one_bos_and_reads_as_intended() -> None:
    tok = llama3_tokenizer()
    ids = prompt_token_ids(tok, PROMPT).tolist()
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.decode(ids) == "<|begin_of_text|>" + PROMPT
    assert tok.decode(ids, skip_special_tokens=True) == PROMPT
    assert len(ids) < len(PROMPT.encode()) // 2  # BPE pieces, not bytes
    # A template that names the BOS itself still gets one: the tokenizer's own is the one kept.
    again = prompt_token_ids(tok, "<|begin_of_text|>" + PROMPT).tolist()
    assert again == ids
    # prompt=random keeps the BOS and draws the rest among the ordinary tokens.
    random = prompt_ids_for(tok, "random", PROMPT, seed=1).tolist()
    assert random[0] == tok.bos_token_id and len(random) == len(ids)
    assert not set(random[1:]) & set(tok.all_special_ids)


def test_the_suffix_pad_without_a_pad_token_and_the_studys_pad_text() -> None:
    tok = llama3_tokenizer()
    # Llama-3 has no pad token: suffix=pad reads at <|end_of_text|>, one real token.
    assert suffix_token_ids(tok, "pad").tolist() == [tok.eos_token_id] == [tok.convert_tokens_to_ids("<|end_of_text|>")]
    assert suffix_token_ids(tok, "eos").tolist() == [tok.eos_token_id]
    # The study's "[PAD]" text, tokenised with the special tokens as its code did: a second BOS, then its pieces.
    study = suffix_token_ids(tok, "[PAD]").tolist()
    assert study[0] == tok.bos_token_id and study.count(tok.bos_token_id) == 1 and len(study) > 2
    assert tok.decode(study) == "<|begin_of_text|>[PAD]"
    assert "[PAD]" not in tok.get_vocab()  # no such token in Llama-3: plain text


@pytest.mark.parametrize("suffix", ["pad", "[PAD]"])
def test_the_prefix_cache_equals_the_whole_sequence_with_llama3_positions(llama3, suffix: str) -> None:
    llm, tok = llama3
    readers = {cached: LLMReader(llm, tok, num_tokens=8, template=PROMPT, suffix=suffix, prefix_cache=cached)
               for cached in (True, False)}
    z = torch.randn(3, 8, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    for pooling in ("last", "mean"):
        outs = []
        for reader in readers.values():
            reader.pooling = pooling
            out = reader(z)
            (grad,) = torch.autograd.grad(out.pow(2).sum(), z)
            outs.append((out, grad))
        (out_c, grad_c), (out_f, grad_f) = outs
        assert torch.allclose(out_c, out_f, rtol=0, atol=1e-10) and torch.allclose(grad_c, grad_f, rtol=0, atol=1e-10)
    # What the LLM reads, in order: one BOS, the prompt, the latents, the suffix.
    embeds, spans = readers[False].sequence(z.detach())
    assert spans["bos"] == slice(0, 1) and spans["suffix"].stop == embeds.shape[1]
    prompt_ids = readers[False].prompt_ids.tolist()
    assert tok.decode(prompt_ids + readers[False].suffix_ids.tolist()) == (
        "<|begin_of_text|>" + PROMPT + ("<|end_of_text|>" if suffix == "pad" else "<|begin_of_text|>[PAD]"))
    # The cache's positions matter: the same tail at positions 0.. (as if there were no prompt) reads otherwise.
    reader = readers[True]
    reader.pooling = readers[False].pooling = "last"
    kv = reader._prefix.get(reader.decoder, reader.embed.weight, inputs_embeds=reader.embed(reader.prompt_ids[None]))
    assert kv[0][0].shape[2] == len(prompt_ids)
    tail = torch.cat([z.detach(), reader.embed(reader.suffix_ids).expand(3, -1, -1)], dim=1)
    at_zero = reader.decoder(inputs_embeds=tail, position_ids=torch.arange(tail.shape[1])[None], use_cache=True,
                             **{reader._cache_kwarg: expanded_cache(kv, 3, llm.config)}).last_hidden_state[:, -1]
    assert not torch.allclose(at_zero.float(), readers[False](z.detach()), atol=1e-3)
