"""Diagnostics of finished runs: what the frozen LLM does with the soft tokens.

`run_diagnostics(model, data, run_dir, level)` writes diagnostics.json; `load_run(run_dir)` rebuilds a
finished run; `summary_scalars` flattens the scalars for the tidy table; `diagnostics_table` collects them.
"""

from tsllm.diagnostics.geometry import collapse, linear_cka, nearest_tokens, norm_stats, top1_agreement
from tsllm.diagnostics.llm_pass import SPANS, is_llm_reader, llm_states, reader_sequence
from tsllm.diagnostics.probes import layer_chosen_without_test, layer_probes, probe_accuracy
from tsllm.diagnostics.runner import (
    FILE,
    LEVELS,
    cross_run_cka,
    not_applicable_message,
    resolve_level,
    run_diagnostics,
    summary_scalars,
)
from tsllm.diagnostics.runs import DiagnosticsError, load_run
from tsllm.diagnostics.table import diagnostics_table

__all__ = [
    "FILE", "LEVELS", "SPANS", "DiagnosticsError", "collapse", "cross_run_cka", "diagnostics_table",
    "is_llm_reader", "layer_chosen_without_test", "layer_probes", "linear_cka", "llm_states", "load_run", "nearest_tokens",
    "norm_stats", "not_applicable_message", "probe_accuracy", "reader_sequence", "resolve_level",
    "run_diagnostics", "summary_scalars", "top1_agreement",
]
