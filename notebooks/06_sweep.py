# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6 · Sweeping one merge hyper-parameter for the accuracy-length front
#
# Wu et al. 2025 (§6) find merging sensitive to its hyper-parameters — task arithmetic's α decides
# whether the merge stays long or gets short — and ask for selecting them automatically; their Table 7
# values are chosen by hand. This notebook searches one hyper-parameter of one method for the
# **Pareto front** of accuracy (higher is better) against mean response length (shorter is better),
# with as few evaluations as it can (`l2s.sweep`): it evaluates both ends of the range, then keeps
# splitting the interval whose two ends leave the largest area of (accuracy, length) that no point
# evaluated so far dominates — where a new point could still extend the front — until the budget of
# dev evaluations is spent. Only the values on the dev front are then evaluated on the test split.
# With `grid` = N it evaluates N evenly spaced values instead: the reference that `reference_run`
# compares a search with (distance of each grid-front point to the search's front, hypervolume ratio).
#
# Each value is merged into the merge cache (deleted once evaluated, unless `keep_merges`) and
# evaluated into `run_dir/points/<param>-<value>/{dev,test}`; `run_dir/sweep.json` records every
# point, the front, its test results and the search's choices, and `sweep_front.{png,pdf,csv}` draws
# them. The test runs are tagged `sweep`, so the figures' Pareto plot draws them (`plot = False`
# keeps them off).

# %% tags=["parameters"]
run_dir = "runs/toy-s-ta-sweep"      # the sweep's run directory (rerun to resume)
models_run = "runs/toy-s-models"     # a run of 00_models
method = "task_arithmetic"           # l2s.merge method string
params = {}                          # the method's fixed hyper-parameters
param = "alpha"                      # the one to sweep
low = 0.1
high = 1.0
budget = 5                           # dev evaluations of the search
grid = None                          # N: evaluate N evenly spaced values instead (a reference)
resolution = None                    # do not split intervals narrower than 2x this (None: (high-low)/64)
calibration = None                   # AIM / Sens-Merging: "toy", "s1k" or a list of files (as 01_merge)
calibration_samples = 100
datasets = ["toy"]
data_dir = None                      # None: the models run's, else generated (toy)
dev_split = "dev"                    # the search sees this split only
test_split = "test"                  # the front's values are evaluated on this one
prompt = "chat"
max_new_tokens = 128
backend = "auto"
batch_size = 64
dtype = "auto"
seed = 0
reference_run = None                 # another sweep run (a grid) to compare the front with
plot = True                          # tag the front's test runs for the figures
keep_merges = False

# %%
from l2s import report
from l2s import sweep as sw

report.setup_notebook()

# %%
cfg = sw.SweepConfig(out=run_dir, models_run=models_run, method=method, params=params, param=param, low=low,
                     high=high, budget=budget, grid=grid, resolution=resolution, calibration=calibration,
                     calibration_samples=calibration_samples, datasets=datasets, data_dir=data_dir,
                     dev_split=dev_split, test_split=test_split, prompt=prompt, max_new_tokens=max_new_tokens,
                     backend=backend, batch_size=batch_size, dtype=dtype, seed=seed, reference_run=reference_run,
                     plot=plot, keep_merges=keep_merges)
record = sw.run_sweep(cfg)
report.show_figures({"front": sw.draw_front(record, run_dir)})

# %% [markdown]
# ## Results
#
# One row per evaluated value, in value order: when the search evaluated it (`order`, 0 first), its
# dev accuracy (%) and mean tokens, whether it is on the dev front, and for front values their test
# accuracy and mean tokens. Read the front from the shortest to the longest value: each step buys
# accuracy with length, and a value off the front is beaten on both. The reading says in which order
# the search spent its budget and, with a reference grid, how close its front comes to the grid's with
# fewer evaluations (distances in accuracy and relative length, hypervolume ratio near 100%: as good).

# %% tags=["results"]
report.show(sw.points_table(record), sw.reading(record))
