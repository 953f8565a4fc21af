"""The package installs from a wheel and runs outside the source tree: conf/ ships inside it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_installs_into_a_fresh_venv_and_runs_from_an_empty_folder(tmp_path: Path) -> None:
    # Build from a copy so the checkout gets no build/ folder; the conf link is kept as a link.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "results", "outputs", "multirun", "build", "*.egg-info", "__pycache__", ".*_cache"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only the installed tsllm may be seen
    env["HF_HUB_OFFLINE"] = "1"
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
                   check=True, capture_output=True, timeout=300, env=env)
    (wheel,) = wheels.glob("tsllm-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # Installed before the dependencies are visible, so pip cannot take this interpreter's tsllm for it.
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "-q", str(wheel)], check=True,
                   capture_output=True, timeout=300, env=env)
    # The dependencies come from this interpreter's site-packages, appended after the venv's own, so the
    # wheel's tsllm wins (a path in a .pth does not run that folder's own .pth files, e.g. an editable tsllm).
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "empty"
    work.mkdir()
    where = subprocess.run([str(python), "-c", "import tsllm.train as t; print(t.__file__); print(t.CONF_DIR)"],
                           cwd=work, env=env, check=True, capture_output=True, text=True).stdout.split()
    assert all(p.startswith(str(venv)) for p in where), where
    out = subprocess.run([str(python), "-m", "tsllm.train", "experiment=debug", "logger=none"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (record,) = work.glob("outputs/runs/*/*/record.json")
    assert json.loads(record.read_text())["status"] == "finished"
