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
# # 2 · Evaluation: accuracy, length and reflection, by difficulty
#
# Each model answers every problem of the benchmark once, greedily (Wu et al. 2025: temperature 0;
# 10,240 new tokens for slow and merged models with the `qwen25-math-cot` prompt, 8,192 for the quick
# model with few-shot CoT; the toy models get their chat template). For every response we record its
# length in tokens, whether the extracted answer is right (math-verify), and its **reflection keywords**
# (“wait”, “double-check”, “let me check”, … — Wu et al. §5.2): a response with any of them is
# *reflective*. Whether reflecting *helps* is read off the **interim answer**, the last `\boxed{}`
# before the first keyword, graded like the final one: per level, the share of checks that turn a wrong
# answer right (the correction rate), a right one wrong, or change nothing.
#
# The model is given directly, as a role of a models run, or as the merged checkpoint of a merge run;
# the run is tagged (size, role, method, parameters) so that the figures know where it belongs.

# %% tags=["parameters"]
run_dir = "runs/toy-s-slow"      # the evaluation run directory (rerun to resume)
model = None                     # a checkpoint path or hub id, or:
models_run = None                # a run of 00_models, with
role = None                      #   quick / slow / short, or:
merge_run = None                 # a run of 01_merge
datasets = ["toy"]
split = "test"
limit = None                     # first N problems of each dataset
data_dir = None                  # directory of <dataset>/<split>.jsonl (toy: generated when None)
prompt = "chat"                  # chat (toy), qwen25-math-cot (slow/merged: the model's chat template),
                                 # qwen25-math-cot-literal (the toolkit's ChatML string), cot (quick, few-shot)
max_new_tokens = 128
temperature = 0.0
top_p = 1.0
exemplars = None                 # cot: a JSON / JSONL file of {question, answer} few-shot exemplars
n = 1                            # samples per problem
seed = 0
backend = "auto"                 # auto, hf, vllm
batch_size = 64                  # hf
tensor_parallel_size = 1         # vllm: GPUs per model
data_parallel_size = 1           # vllm: model replicas (worker processes), each on tensor_parallel_size GPUs
max_model_len = None             # context for prompt + response (None: the model's own); longer budgets are capped
gpu_memory_utilization = 0.9     # vllm
dtype = "auto"
tags = {}                        # extra tags, e.g. {"sweep": True}; size/role/method/params are filled in

# %%
from IPython.display import display

from l2s import notebook_helpers as nh
from l2s import report
from l2s.eval.run import EvalConfig, evaluate
from l2s.eval.sampling import SamplingConfig

report.setup_notebook()

# %%
checkpoint = nh.resolve_model(model, models_run, role, merge_run)
run_tags = nh.default_tags(models_run, role, merge_run, tags)
data_dir = data_dir or nh.data_dir_of(models_run, merge_run)
cfg = EvalConfig(model=checkpoint, datasets=datasets, out=run_dir, data_dir=data_dir, split=split, limit=limit,
                 prompt=prompt, exemplars=exemplars,
                 sampling=SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=n,
                                         seed=seed),
                 backend=backend, batch_size=batch_size, tensor_parallel_size=tensor_parallel_size,
                 data_parallel_size=data_parallel_size, max_model_len=max_model_len,
                 gpu_memory_utilization=gpu_memory_utilization, dtype=dtype, tags=run_tags)
evaluate(cfg)
display(run_tags)

# %% [markdown]
# ## Results
#
# Metrics by dataset and difficulty level (`all` = the whole dataset): accuracy and reflective ratio
# in %, mean and median length in tokens, reflection-keyword hits per response, and how many
# responses ran into the token budget. Read the rows top to bottom: a slow model's responses grow with
# difficulty and stay reflective everywhere; Wu et al. (Fig. 2) find that a good merge shortens the
# easy levels most and keeps reflection where it pays — at the hard levels — while a quick model is
# short everywhere and loses the hard levels. A non-zero **truncated** count means the budget cut
# responses short: their lengths are lower bounds.

# %% tags=["results"]
table = nh.metrics_table(run_dir)
report.show(table, report.levels_reading(table))
