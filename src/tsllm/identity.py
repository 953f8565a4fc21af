"""Which arm a run is, and which cell: computed once, from a resolved config, by :func:`identify`.

The arm label names what reads the latents and the settings off their declared defaults: ``llm``,
``llm[weights=random]``, ``mean[bos=True]``, ``llm+lora``, ``llm[align=scale]``. The settings are those the
reader's ``Options`` and :class:`tsllm.config.LLMConfig` mark ``ARM``, compared with the defaults declared
there, so a default changed in its declaration changes the label with it and nowhere else. ``tsllm.train``
stores the identity in the record; ``tsllm.results`` reads it, and computes it with this same function for
records that predate the fields. Records written before readers existed (a ``mode`` group) are labelled by
that mode (or the reader name they carry), as the tables always have.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from tsllm.config import LLMConfig, plain
from tsllm.records import config_hash

#: Config groups that make an arm (what reads the latents); everything else is the setting it runs in.
ARM_GROUPS = ("mode", "reader", "llm")
#: Encoder settings a control arm changes (the multi-scale ablation): they label the arm, not the setting.
ARM_SETTINGS = ("encoder.kernel_sizes",)


@dataclass(frozen=True)
class Identity:
    """What a run is, for every table: its mode, arm label, cell and pairing context."""

    mode: str       # standalone | hybrid | lora | text
    arm: str        # what reads the latents, e.g. llm[weights=random]
    cell: str       # hash of the config without its seed: the runs a mean over seeds averages
    context: str    # hash without seed and arm: two arms of one context pair on dataset and seed
    uses_llm: bool  # the run loads the LLM (to read with it, or for its BOS embedding)


def without(config: Mapping[str, Any], *dotted: str) -> dict[str, Any]:
    """A deep copy of ``config`` without the given top-level groups or dotted keys."""
    pruned = json.loads(json.dumps(config, default=str))
    for key in dotted:
        *parents, leaf = key.split(".")
        node = pruned
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return pruned


def identify(config: Any) -> Identity:
    """The identity of a run of this resolved config (a DictConfig or a record's ``config``)."""
    config = plain(config)
    cell = config_hash(without(config, "seed"))
    context = config_hash(without(config, "seed", *ARM_GROUPS, *ARM_SETTINGS))
    if "_target_" not in (config.get("reader") or {}):  # the mode era: no reader class, the name it carries
        mode = (config.get("mode") or {}).get("name", "standalone")
        name = (config.get("reader") or {}).get("name", mode)
        return Identity(mode=mode, arm=name, cell=cell, context=context, uses_llm=mode != "standalone")
    from tsllm.readers import reader_options

    cls, options = reader_options(config["reader"])
    mode = cls.arm_mode(options)
    notes = _off_default(LLMConfig, config.get("llm") or {}) if mode != "standalone" else []
    notes += _off_default(cls.Options, config["reader"])
    label = options.name + ("+lora" if mode == "lora" else "")
    return Identity(mode=mode, arm=label + (f"[{','.join(notes)}]" if notes else ""), cell=cell, context=context,
                    uses_llm=cls.loads_llm(options))


def _off_default(declared: type, values: Mapping[str, Any]) -> list[str]:
    """``key=value`` for each ARM setting of ``declared`` whose value differs from its declared default."""
    defaults = declared.defaults()
    notes = []
    for f in fields(declared):
        if not f.metadata.get("arm"):
            continue
        value, default = named(values.get(f.name, defaults[f.name])), named(defaults[f.name])
        if value != default:
            notes.append(f"{f.name}={value}")
    return notes


def named(value: Any) -> Any:
    """An option object (the alignment: ``{name: scale, ...}``) is named by its ``name``."""
    return value["name"] if isinstance(value, Mapping) and "name" in value else value
