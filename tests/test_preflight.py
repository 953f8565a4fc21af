"""Every mistake on a command line fails in one line that says what to do, before any folder exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tsllm.preflight import check_command_line
from tsllm.train import CONF_DIR


def train_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "tsllm.train", "logger=none", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("args", "message"), [
    (["encoder=gur"], "error: encoder=gur: no such option; encoder takes cnn, inception, mlp, none, resnet, "
                      "study_attention, study_cnn, study_inception, study_mlp, study_resnet, transformer"),
    (["encoder.num_kernel=4"], "error: encoder.num_kernel=4: unknown key; encoder inception takes num_tokens, "
                               "num_kernels, channels, num_blocks, residual, kernel_sizes"),
    (["+encoder.num_kernel=4"], "error: encoder.num_kernel: unknown key; encoder inception takes num_tokens, "
                                "num_kernels, channels, num_blocks, residual, kernel_sizes"),
    (["data.name=GunPonit"], "error: data.name=GunPonit: unknown dataset 'GunPonit'; did you mean GunPoint"),
    (["-m", "data.name=ArrowHead,GunPonit"], "error: data.name=GunPonit: unknown dataset 'GunPonit'"),
    (["data.root=/no/such/folder"], "error: data.name=GunPoint: "),
    (["align=scale"], "error: align=scale: this reader has no LLM to align; align applies to reader=llm"),
])
def test_each_mistake_is_one_line_and_leaves_no_folder(tmp_path: Path, args: list[str], message: str) -> None:
    done = train_cli(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert list(tmp_path.iterdir()) == []  # no outputs/, no multirun/: nothing was created


def test_a_sweep_checks_every_dataset_of_its_experiment_before_its_first_job() -> None:
    assert check_command_line(CONF_DIR, ["-m", "experiment=controls", "datasets=evidence16"]) is None
    problem = check_command_line(CONF_DIR, ["-m", "experiment=controls", "datasets=list", "datasets.names=[GunPoint,Nope]"])
    assert problem is not None and "Nope" in problem


@pytest.mark.parametrize(("args", "message"), [
    (["train.optimizer=sgd"], "train.optimizer='sgd': expected one of adam, adamw"),
    (["train.precision=fp8"], "train.precision='fp8': expected one of auto, fp32, no, bf16, fp16"),
    (["data.normalise=l2"], "data.normalise='l2': expected one of"),
    (["llm.quantization=2bit"], "llm.quantization='2bit': expected one of 8bit, 4bit"),
    (["diagnostics.level=most"], "diagnostics.level='most': expected one of auto, none, basic, full"),
    (["logger=wandb", "logger.mode=sometimes"], "logger.mode='sometimes': expected one of offline, online, disabled"),
    (["mode=hybrid", "align=prototypes", "reader.align.num_heads=x"], "reader.align.num_heads=x: Value 'x'"),
    (["+seedd=3"], "seedd: unknown top-level key"),
    (["-m", "encoder=mlp,gur"], "encoder=gur: no such option"),
])
def test_fixed_option_sets_and_unknown_keys_of_every_group(args: list[str], message: str) -> None:
    assert (check_command_line(CONF_DIR, args) or "").startswith(message)


def test_a_good_command_line_passes() -> None:
    assert check_command_line(CONF_DIR, ["mode=hybrid", "align=scale", "llm=tiny_random", "train.lr=1e-4"]) is None
