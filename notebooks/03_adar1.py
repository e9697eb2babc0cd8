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
# # 3 · Ada-R1: adaptive long and short reasoning
#
# Ada-R1 (Luo et al. 2025) starts from a linear merge of the long (slow) and short-CoT models,
# θ_M = α·θ_L + (1−α)·θ_S with α = 0.8, then teaches it *when* to think long with bi-level
# preference optimisation: K responses per training problem are sampled from each model; at the
# **group level** the style with the higher accuracy (by more than 1/(2K)) is preferred, at the
# **instance level** the shortest correct response of the preferred group beats its longest ones;
# DPO on these pairs gives Ada-R1. The long model, the plain merge and each Ada-R1 variant are then
# evaluated greedily, and compared by level (Luo et al. Figs. 4-6: the long-CoT ratio should rise with
# difficulty).

# %% tags=["parameters"]
run_dir = "runs/toy-s-adar1"         # Ada-R1 run: samples, pairs, eval-* runs, summary.json
models_run = "runs/toy-s-models"     # a run of 00_models with a short model
alpha = 0.8
k = 12                               # samples per problem from each model
temperature = 0.6
top_p = 0.95
train_dataset = "toy"
train_split = "train"
train_limit = None
data_dir = None                      # benchmarks directory (None: the models run's, else the hub)
train_data_dir = None                # training problems, if elsewhere (None: the models run's mix, if any)
prompt = "chat"
eval_datasets = ["toy"]
eval_split = "test"
eval_limit = None
max_new_tokens = None                # both stages at once; or per stage:
sample_max_new_tokens = None         #   sampling (None: the paper's 16,384)
eval_max_new_tokens = None           #   evaluation (None: the paper's 10,240)
dpo_preset = "toy"
variants = ["bilevel"]               # + group, instance, sft (Table 3), shortest_vs_longest (baseline)
baseline_source = "pooled"           # shortest_vs_longest from both models' samples ("long": the long model's)
backend = "auto"                     # sampling and evaluation: auto, hf, vllm
engine = {}                          # vllm: tensor_parallel_size, data_parallel_size, dtype, max_model_len, ...
seed = 0

# %%
import pandas as pd

from l2s import notebook_helpers as nh
from l2s import report
from l2s.adar1 import AdaR1Config, run_adar1

report.setup_notebook()

# %%
models = nh.read_models(models_run)
if data_dir is None:
    data_dir = models.get("data_dir")
if train_data_dir is None:
    train_data_dir = models.get("train_data_dir")
cfg = AdaR1Config(long_model=models["slow"], short_model=models["short"], out=run_dir, alpha=alpha, k=k,
                  temperature=temperature, top_p=top_p, train_dataset=train_dataset, train_split=train_split,
                  train_limit=train_limit, data_dir=data_dir, train_data_dir=train_data_dir, prompt=prompt,
                  eval_datasets=eval_datasets, backend=backend, engine=engine,
                  eval_split=eval_split, eval_limit=eval_limit, max_new_tokens=max_new_tokens,
                  sample_max_new_tokens=sample_max_new_tokens, eval_max_new_tokens=eval_max_new_tokens,
                  baseline_source=baseline_source,
                  dpo_preset=dpo_preset, variants=variants, seed=seed, tags={"size": models["size"]})
result = run_adar1(cfg)
pd.Series({name: str(run) for name, run in result["eval_runs"].items()}, name="evaluation run")

# %% [markdown]
# ## Results
#
# The long model, the merge and Ada-R1, level by level: accuracy (%), mean length (tokens) and the
# long-CoT ratio — the share of reflective responses, the toy world's mark of a long chain of thought.
# The reading below gives each model's accuracy change (points) and length change against the long
# model, as Ada-R1's Table 1 does. Look at the **reflective %** block: the plain merge keeps one style
# for all levels, while a working Ada-R1 answers the easy levels short (low ratio) and the hard ones
# long (high ratio) — shorter on average at little cost in accuracy (Luo et al. Figs. 4-6).

# %% tags=["results"]
report.show(nh.runs_by_level(result["eval_runs"]), report.adar1_reading(result["summary"]))
