"""hydra/launcher=slurm: what the submitit launcher would submit, rendered without a cluster.

The plugin itself builds its submitit executor from conf/hydra/launcher/slurm.yaml and submits the sweep as
a job array; only what needs SLURM is replaced: the check that ``srun`` exists, ``sbatch`` (it answers with
a job id) and the wait for results. What remains on disk is what a cluster would receive: the sbatch script and one pickled
job per cell (the Hydra task, tsllm.train's main, with the cell's overrides).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.utils import JobReturn
from hydra.utils import instantiate

from tsllm import train
from tsllm.train import CONF_DIR

from conftest import dev_dependency

dev_dependency("hydra_plugins.hydra_submitit_launcher")


def submit_without_a_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *overrides: str,
                             cells: list[list[str]]) -> Path:
    """Launch ``cells`` through the slurm preset with sbatch answering job 4242; the submitit folder."""
    from submitit.slurm import slurm

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}",
                                                      *overrides], return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=train.main, config=cfg)
    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # "srun is on PATH"
    monkeypatch.setattr(slurm.SlurmExecutor, "_make_submission_command",
                        lambda self, path: ["echo", "Submitted batch job 4242"])
    monkeypatch.setattr(slurm.SlurmJob, "results", lambda self: [JobReturn()])
    assert len(launcher.launch(cells, initial_job_idx=0)) == len(cells)
    return tmp_path / ".submitit" / "4242"


def test_the_slurm_preset_renders_a_gpu_job_array(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cells = [["encoder=mlp", "mode=hybrid"], ["encoder=cnn", "mode=hybrid"]]
    folder = submit_without_a_cluster(tmp_path, monkeypatch, "hydra.launcher.partition=gpu", "sweep_name=grid",
                                      cells=cells)
    script = (folder / "4242_submission.sh").read_text()
    requests = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in script.splitlines()
                if line.startswith("#SBATCH") and "=" in line}
    assert requests["#SBATCH --gpus-per-node"] == "1"
    assert requests["#SBATCH --cpus-per-task"] == "8"
    assert requests["#SBATCH --mem"] == "64GB"
    assert requests["#SBATCH --time"] == "720"
    assert requests["#SBATCH --partition"] == "gpu"
    assert requests["#SBATCH --array"] == "0-1%2"  # the two cells (array_parallelism=32, capped at the cells)
    assert requests["#SBATCH --job-name"] == "tsllm-grid"
    assert requests["#SBATCH --output"].startswith(str(tmp_path / ".submitit" / "%A_%a"))
    command = next(line for line in script.splitlines() if line.startswith("srun"))
    assert command.endswith(f"-u -m submitit.core._submit {tmp_path / '.submitit' / '%j'}")
    # What each array task runs: tsllm.train's Hydra task with its cell's overrides.
    jobs = [pickle.loads(p.read_bytes()) for p in sorted(tmp_path.glob(".submitit/4242_*/4242_*_submitted.pkl"))]
    assert sorted(job.args[0] for job in jobs) == sorted(cells)
    assert all(job.function.task_function is train.main for job in jobs)
