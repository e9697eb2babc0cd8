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
# # 4 · Figures
#
# Every figure is regenerated from the saved runs alone (no model is loaded): each run's tags and
# `metrics.json` are read, measured values are drawn beside the numbers the papers report (labelled
# “reported (paper, table)”; values read off a figure are labelled as estimates), and each figure is
# written as PNG, PDF and the CSV of the data behind it.
#
# - **length_accuracy** — length reduction vs the slow model and accuracy, per method and size (Wu et al. Tables 1-4);
# - **self_correction** — reflective-response ratio and keyword hits per response (Table 6);
# - **difficulty** — length and reflective ratio by difficulty level (Fig. 2a/2b);
# - **adar1_by_level** — Ada-R1's long-CoT ratio, accuracy and length by level (Luo et al. Figs. 4-6);
# - **pareto** — accuracy vs length over the α sweep and all methods.

# %% tags=["parameters"]
run_dir = "runs/figures"   # where the study keeps this executed notebook
runs_dir = "runs"          # the runs to draw
out_dir = "figures"        # where the figures go

# %%
from l2s import report
from l2s.figures import make_figures

report.setup_notebook()

# %%
written = make_figures(runs_dir, out_dir)
report.show_figures(written)

# %% [markdown]
# ## Results
#
# The measured runs of **length_accuracy**, one row per run: accuracy (%), mean length (tokens) and
# the length change against the slow model of the same size (%, negative = shorter), the quantity of
# Wu et al.'s Tables 1-4. A useful merge sits near the slow model's accuracy with a clearly negative
# length change; the quick model marks how short (and how inaccurate) a model gets without any
# reasoning. The reading names, per size, the shortest merge and the most accurate one — compare them
# with the reported points in the figures above, and with the Pareto front in **pareto**.

# %% tags=["results"]
table = report.figures_table(out_dir)
report.show(table, report.figures_reading(table))
