"""The package installs from a wheel and runs outside the source tree (conf/ ships inside it); setup.sh picks torch."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

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


@pytest.fixture
def cpu_index(tmp_path: Path) -> Iterator[str]:
    """A local stand-in for PyTorch's CPU index: answers for /torch/ like a PEP 503 index."""
    root = tmp_path / "index"
    (root / "torch").mkdir(parents=True)
    (root / "torch" / "index.html").write_text("<a href='torch-2.13.0+cpu.whl'>torch</a>\n")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # no request lines in the test output
        pass


@pytest.mark.skipif(sys.platform != "linux", reason="the CPU-only build comes from its own index on Linux only")
def test_setup_chooses_the_torch_build_from_the_machine_and_the_override(tmp_path: Path, cpu_index: str) -> None:
    # A copy of the script, so that no .venv of the checkout (with a torch in it: "kept") takes part.
    (tmp_path / "repo" / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", tmp_path / "repo" / "scripts" / "setup.sh")
    gpu, none = tmp_path / "gpu", tmp_path / "nogpu"  # fake nvidia-smi: one GPU, or no driver (exit 9)
    for folder, body in ((gpu, "echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'"), (none, "exit 9")):
        folder.mkdir()
        (folder / "nvidia-smi").write_text(f"#!/bin/sh\n{body}\n")
        (folder / "nvidia-smi").chmod(0o755)
    closed = socket.socket()  # a port that nothing answers on: the index cannot be reached
    closed.bind(("127.0.0.1", 0))
    unreachable = f"http://127.0.0.1:{closed.getsockname()[1]}"

    def choice(fake: Path, index: str, **env: str) -> tuple[str, str]:
        out = subprocess.run(["bash", str(tmp_path / "repo" / "scripts" / "setup.sh")], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}",
                             "PYTHON": sys.executable, "TSLLM_SETUP_DRY_RUN": "1", "TSLLM_TORCH_CPU_INDEX": index,
                             **env})
        assert out.returncode == 0, out.stderr
        (line,) = out.stderr.splitlines()  # one line says which build and why
        return line, out.stdout.strip()

    line, cmd = choice(gpu, cpu_index)
    assert "CUDA build" in line and "lists 1 GPU(s)" in line and cmd == "would run: pip install torch==2.13.0"
    line, cmd = choice(none, cpu_index)
    assert "2.13.0+cpu, the CPU-only build" in line and "no GPU" in line
    assert cmd == f"would run: pip install --extra-index-url {cpu_index} torch==2.13.0+cpu"
    line, cmd = choice(none, unreachable)  # the same version from the default index, and said so
    assert f"{unreachable} cannot be reached" in line and cmd == "would run: pip install torch==2.13.0"
    line, cmd = choice(gpu, cpu_index, TSLLM_TORCH="cpu", TSLLM_TORCH_VERSION="2.5.1")
    assert "TSLLM_TORCH=cpu" in line and cmd.endswith("torch==2.5.1+cpu")
    line, cmd = choice(none, cpu_index, TSLLM_TORCH="cuda")
    assert "CUDA build" in line and cmd == "would run: pip install torch==2.13.0"
    line, cmd = choice(gpu, cpu_index, TSLLM_TORCH="skip")
    assert "left to pip" in line and cmd == ""
    closed.close()
    bad = subprocess.run(["bash", str(tmp_path / "repo" / "scripts" / "setup.sh")], capture_output=True, text=True,
                         env={**os.environ, "TSLLM_TORCH": "rocm", "TSLLM_SETUP_DRY_RUN": "1"}, timeout=60)
    assert bad.returncode == 2 and "expected auto, cpu, cuda or skip" in bad.stderr
    assert not (tmp_path / "repo" / ".venv").exists()  # a dry run changes nothing


def test_ci_runs_exactly_the_readmes_set_up_and_test_command() -> None:
    assert (REPO / ".ci" / "run").read_text().splitlines()[-1] == "bash scripts/setup.sh && .venv/bin/python -m pytest"
