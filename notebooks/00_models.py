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
# # 0 · Models: a quick thinker, a slow thinker and a short thinker
#
# Long-to-short reasoning starts from two models of one family (Wu et al. 2025, §3): a **System-1**
# model that answers quickly (Qwen2.5-Math) and a **System-2** model fine-tuned from it to reason at
# length (DeepSeek-R1-Distill-Qwen). Ada-R1 (Luo et al. 2025) adds a **short-CoT** model: the long model
# fine-tuned on short solutions.
#
# On a CPU we use the *toy world* (`l2s.toy`): tiny Qwen2 models trained on a shell game whose
# difficulty levels 1-5 play the role of MATH levels (1 to 8 swaps). The quick model glances at the first
# swap and answers; the slow one tracks every swap in a hasty first pass that overlooks a sleight of hand
# (a swap of neighbouring cups), states an interim answer, then double-checks (“Wait, let me
# double-check”) and corrects it when the first pass slipped — more often on harder levels; the short
# one tracks only the first four swaps — exact on easy problems, a guess on hard ones. On a
# GPU box the same notebook only records the real checkpoints' hub ids or paths. Without a GPU,
# `standins` writes tiny random Qwen2 pairs laid out like a real pair
# (`l2s.standins`: the real tokenizers and chat templates, vocabulary rows, tied or untied embeddings,
# 4k vs 128k contexts), so the real sizes' steps can run anywhere. For AIM and Sens-Merging, `calibration`
# = `"s1k"` also writes the s1K calibration files (`l2s calibration s1k`). Either way this step writes
# `models.json`, which every later step reads.

# %% tags=["parameters"]
run_dir = "runs/toy-s-models"   # where models.json goes
size = "toy-s"                  # the size label every run of this family is tagged with
toy_size = "s"                  # toy family to build (l2s.toy.family.SIZES); None for real checkpoints
quick = None                    # real checkpoints: System-1 model (path or hub id)
slow = None                     # System-2 model
short = None                    # short-CoT model (Ada-R1), optional
standins = None                 # or a real layout to stand in for: qwen-1.5b, qwen-7b, qwen-14b, qwen-32b
tokenizers = {}                 # stand-ins: {"qwen": dir or hub id, "r1": dir or hub id} (default: the hub)
toy_data_per_level = None       # also write a small toy split (problems per level) for quick studies
calibration = None              # "s1k": write the s1K calibration files for AIM / Sens-Merging
s1k = {}                        # their options: n (100), seed (0), source (hub simplescaling/s1K, or a file)
mix = None                      # Ada-R1's training mix (l2s mix options: total, ratio, seed, data_dir), or None
short_cot = None                # build the short-CoT model from slow (l2s short-cot options + preset), or None
seed = 0

# %%
from l2s import notebook_helpers as nh
from l2s import report

report.setup_notebook()

# %%
models = nh.prepare_models(run_dir, size=size, toy_size=toy_size, quick=quick, slow=slow, short=short,
                           standins=standins, tokenizers=tokenizers, toy_data_per_level=toy_data_per_level,
                           calibration=calibration, s1k=s1k, mix=mix, short_cot=short_cot, seed=seed)
{k: models[k] for k in ('size', 'source', 'quick', 'slow', 'short')}

# %% [markdown]
# ## Results
#
# One row per model. For the toy family each model's training card says what it was trained on and
# for how long: the slow model starts from the quick one (its task vector, slow − quick, is what
# merging scales), the short model from the slow one. Look at the **parent** column (the chain
# quick → slow → short), the **styles** (the quick model's direct and terse answers, the slow model's
# long, double-checked ones, the short model's short ones) and the **final loss**: a slow model that has
# not learnt its long style gives merging nothing to shorten. Real checkpoints (and stand-ins) have no
# card here: their row is the checkpoint recorded in `models.json`.

# %% tags=["results"]
cards = nh.training_cards(models)
report.show(cards, report.models_reading(cards))
