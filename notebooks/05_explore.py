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
# # 5 · Explore: two runs, side by side
#
# Numbers hide what changed in the text. Load any two evaluation runs — say the slow model and a
# merge — and read their answers to the same problems next to each other, with their lengths and
# reflection-keyword hits. Where the merge is shorter, did it drop the double-check, the chain of
# thought, or the answer?

# %% tags=["parameters"]
run_dir = None                    # unused: this notebook only reads runs
run_a = "runs/toy-s-slow"
run_b = "runs/toy-s-task_arithmetic"
dataset = None                    # only this dataset (None: all)
level = None                      # only this level (None: n per level)
n = 2                             # problems per level

# %%
from l2s import notebook_helpers as nh
from l2s import report

report.setup_notebook()

# %%
label_a, label_b = nh.run_label(run_a), nh.run_label(run_b)
print("A:", label_a, "\nB:", label_b)
nh.side_by_side(run_a, run_b, n=n, dataset=dataset, level=level)

# %% [markdown]
# ## Results
#
# The two runs by dataset and level: accuracy, mean length and reflective ratio of A and of B, and
# B's length change against A, (L_B − L_A) / L_A (Wu et al. 2025's length reduction; negative =
# shorter). Read it with the responses above: a level where B is much shorter and as accurate is
# where the long reasoning was not needed; a level where B is shorter *and* less accurate is where
# it was. A drop in the reflective ratio shows that B stopped double-checking there.

# %% tags=["results"]
comparison = nh.compare_by_level(run_a, run_b)
report.show(comparison, report.compare_reading(comparison, label_a, label_b))
