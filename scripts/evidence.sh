#!/usr/bin/env bash
# The runs behind results/: re-running this skips every finished cell (records are in results/runs/)
# and resumes any unfinished one. One torch thread per process: two queues shared the 2 cores here.
# Wall time here (2 cores, both queues in parallel): see results/LOG.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
PY=.venv/bin/python

# 1. Five encoders standalone, 3 shipped UCR 2015 datasets, 3 seeds, 100 epochs (45 runs).
$PY -m tsllm.train -m encoder=mlp,cnn,inception,resnet,transformer data.name=GunPoint,ArrowHead,ItalyPowerDemand \
    seed=0,1,2 logger=none sweep_name=standalone hydra.sweep.dir=results/runs/standalone

# 2. The same encoders under frozen SmolLM2-135M (hybrid), seed 0 (15 runs).
$PY -m tsllm.train -m mode=hybrid encoder=inception,cnn,resnet,mlp,transformer data.name=GunPoint,ItalyPowerDemand \
    seed=0 logger=none sweep_name=hybrid hydra.sweep.dir=results/runs/hybrid
$PY -m tsllm.train -m mode=hybrid encoder=inception,cnn,resnet,mlp,transformer data.name=ArrowHead \
    seed=0 logger=none sweep_name=hybrid hydra.sweep.dir=results/runs/hybrid_arrowhead

# 3. The study's grid for Inception standalone: lr x kernel count x kernel size (24 runs).
$PY -m tsllm.train -m experiment=paper_grid llm=smollm2_135m mode=standalone encoder=inception \
    data.name=GunPoint,ItalyPowerDemand seed=0 logger=none hydra.sweep.dir=results/runs/inception_grid

# 3b. OSULeaf standalone, seed 0 (5 runs).
$PY -m tsllm.train -m encoder=mlp,cnn,inception,resnet,transformer data.name=OSULeaf seed=0 logger=none \
    sweep_name=standalone hydra.sweep.dir=results/runs/standalone_osuleaf

# 4. Tables, tidy tables and figures: the headline from the default-setting sweeps, the grid apart.
$PY -m tsllm.results results/runs/standalone results/runs/standalone_osuleaf results/runs/hybrid \
    results/runs/hybrid_arrowhead --out results --reference
$PY -m tsllm.results results/runs/inception_grid --out results/grid
$PY scripts/render_notebooks.py --tidy results/tidy.csv --figures results/figures --evidence 01 03
$PY scripts/render_notebooks.py --tidy results/grid/tidy.csv --figures results/figures --evidence 02
