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
# # 1 · Merging the slow thinker into the quick one
#
# Model merging (Wu et al. 2025, §3-4) combines the weights of the quick model θ₀ and the slow model
# θ₁ without any training. Task-vector methods work on δ = θ₁ − θ₀: task arithmetic keeps θ₀ + α·δ,
# TIES trims δ to its largest entries and resolves signs, DARE drops entries at random and rescales
# the rest; SVD methods (LoRE, Twin) keep low-rank parts; activation-based methods (AIM, Sens-Merging)
# weigh the merge with statistics from calibration texts. The hope: a model that thinks only as long
# as it has to.
#
# This notebook merges the models of one models run with one method and its hyper-parameters (Wu et
# al. Table 7 by default). The merged checkpoint goes to the cache (`l2s.paths.cache_dir()/merged/`),
# never to git; this run keeps `merge.json`: the method, parameters, input hashes and output path.

# %% tags=["parameters"]
run_dir = "runs/toy-s-ties"          # where merge.json goes
models_run = "runs/toy-s-models"     # a run of 00_models
method = "ties"                      # l2s.merge method string: ties, dare+ties, aim+ties, sens, linear, ...
params = {"k": 0.8, "alpha": 1.0}    # hyper-parameters (Wu et al. 2025, Table 7)
calibration = None                   # AIM / Sens-Merging: "toy" (toy train problems), "s1k" (the models
                                     # run's s1K files), or a list of files
calibration_samples = 100
dtype = "auto"                       # output dtype (the papers save bf16, Sens-Merging fp32)
seed = 0

# %%
from l2s import notebook_helpers as nh
from l2s import report

report.setup_notebook()

# %%
merged = nh.merge_from_models(run_dir, models_run, method, params, calibration=calibration, seed=seed,
                              dtype=dtype, calibration_samples=calibration_samples)

# %% [markdown]
# ## Results
#
# The merge at a glance: the method with its hyper-parameters as resolved (defaults filled in), the
# base and the merged models, the output dtype, the calibration files (activation-based methods
# only) and where the checkpoint went. Check that the **base** is the quick model and **model 0** the
# slow one for task-vector methods (both models, no base, for `average`; slow and short for `linear`),
# and that the parameters are the ones the config asked for. What the merge does is measured by the
# next step, `02_evaluate` with `merge_run` = this run.

# %% tags=["results"]
report.show(nh.merge_summary(merged), report.merge_reading(merged))
