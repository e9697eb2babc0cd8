"""Write the study's notebooks (``notebooks/NN_*.ipynb``) from the cells below, without outputs.

The notebooks are committed; this script is how they are (re)made: ``python notebooks/build_notebooks.py``.
Each has one cell tagged ``parameters`` (papermill injects a step's parameters after it, see
``l2s study``), markdown written like a paper section, and a few calls into ``l2s``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}
SETUP = """import logging
import pandas as pd
from IPython.display import display
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
pd.set_option("display.max_colwidth", None)"""


def md(text: str):
    return nbformat.v4.new_markdown_cell(text.strip())


def code(text: str):
    return nbformat.v4.new_code_cell(text.strip())


def parameters(text: str):
    cell = code(text)
    cell.metadata["tags"] = ["parameters"]
    return cell


NOTEBOOKS = {
    "00_models.ipynb": [
        md("""
# 0 · Models: a quick thinker, a slow thinker and a short thinker

Long-to-short reasoning starts from two models of one family (Wu et al. 2025, §3): a **System-1**
model that answers quickly (Qwen2.5-Math) and a **System-2** model fine-tuned from it to reason at
length (DeepSeek-R1-Distill-Qwen). Ada-R1 (Luo et al. 2025) adds a **short-CoT** model: the long model
fine-tuned on short solutions.

On a CPU we use the *toy world* (`l2s.toy`): tiny Qwen2 models trained on a shell game whose
difficulty levels 1-5 play the role of MATH levels. The quick model glances at the first round and
answers, the slow one tracks every round and then double-checks it (“Wait, let me double-check”), the
short one tracks only the first four rounds — exact on easy problems, a guess on hard ones. On a GPU box the same notebook only records the real checkpoints' hub ids
or paths. Without a GPU, `standins` writes tiny random Qwen2 pairs laid out like a real pair
(`l2s.standins`: the real tokenizers and chat templates, vocabulary rows, tied or untied embeddings,
4k vs 128k contexts), so the real sizes' steps can run anywhere. For AIM and Sens-Merging, `calibration`
= `"s1k"` also writes the s1K calibration files (`l2s calibration s1k`). Either way this step writes
`models.json`, which every later step reads.
"""),
        parameters("""
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
"""),
        code(SETUP + "\n\nfrom l2s import notebook_helpers as nh"),
        code("models = nh.prepare_models(run_dir, size=size, toy_size=toy_size, quick=quick, slow=slow, short=short,\n"
             "                           standins=standins, tokenizers=tokenizers, toy_data_per_level=toy_data_per_level,\n"
             "                           calibration=calibration, s1k=s1k, mix=mix, short_cot=short_cot, seed=seed)\n"
             "{k: models[k] for k in ('size', 'source', 'quick', 'slow', 'short')}"),
        md("""
For the toy family, each model's training card says what it was trained on and for how long: the
slow model starts from the quick one (its task vector is what merging scales), the short model from
the slow one.
"""),
        code("nh.training_cards(models)"),
    ],
    "01_merge.ipynb": [
        md("""
# 1 · Merging the slow thinker into the quick one

Model merging (Wu et al. 2025, §3-4) combines the weights of the quick model θ₀ and the slow model
θ₁ without any training. Task-vector methods work on δ = θ₁ − θ₀: task arithmetic keeps θ₀ + α·δ,
TIES trims δ to its largest entries and resolves signs, DARE drops entries at random and rescales
the rest; SVD methods (LoRE, Twin) keep low-rank parts; activation-based methods (AIM, Sens-Merging)
weigh the merge with statistics from calibration texts. The hope: a model that thinks only as long
as it has to.

This notebook merges the models of one models run with one method and its hyper-parameters (Wu et
al. Table 7 by default). The merged checkpoint goes to the cache (`l2s.paths.cache_dir()/merged/`),
never to git; this run keeps `merge.json`: the method, parameters, input hashes and output path.
"""),
        parameters("""
run_dir = "runs/toy-s-ties"          # where merge.json goes
models_run = "runs/toy-s-models"     # a run of 00_models
method = "ties"                      # l2s.merge method string: ties, dare+ties, aim+ties, sens, linear, ...
params = {"k": 0.8, "alpha": 1.0}    # hyper-parameters (Wu et al. 2025, Table 7)
calibration = None                   # AIM / Sens-Merging: "toy" (toy train problems), "s1k" (the models
                                     # run's s1K files), or a list of files
calibration_samples = 100
dtype = "auto"                       # output dtype (the papers save bf16, Sens-Merging fp32)
seed = 0
"""),
        code(SETUP + "\n\nfrom l2s import notebook_helpers as nh"),
        code("merged = nh.merge_from_models(run_dir, models_run, method, params, calibration=calibration, seed=seed,\n"
             "                              dtype=dtype, calibration_samples=calibration_samples)\n"
             "nh.merge_summary(merged)"),
        md("The next step (`02_evaluate` with `merge_run` = this run) measures what the merge does."),
    ],
    "02_evaluate.ipynb": [
        md("""
# 2 · Evaluation: accuracy, length and reflection, by difficulty

Each model answers every problem of the benchmark once, greedily (Wu et al. 2025: temperature 0;
10,240 new tokens for slow and merged models with the `qwen25-math-cot` prompt, 8,192 for the quick
model with few-shot CoT; the toy models get their chat template). For every response we record its
length in tokens, whether the extracted answer is right (math-verify), and its **reflection keywords**
(“wait”, “double-check”, “let me check”, … — Wu et al. §5.2): a response with any of them is
*reflective*.

The model is given directly, as a role of a models run, or as the merged checkpoint of a merge run;
the run is tagged (size, role, method, parameters) so that the figures know where it belongs.
"""),
        parameters("""
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
"""),
        code(SETUP + """

from l2s import notebook_helpers as nh
from l2s.eval.run import EvalConfig, evaluate
from l2s.eval.sampling import SamplingConfig"""),
        code("""checkpoint = nh.resolve_model(model, models_run, role, merge_run)
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
run_tags"""),
        md("""
Metrics by difficulty level (accuracy and reflective ratio in %, lengths in tokens). Wu et al. (Fig. 2)
find that a good merge shortens easy problems most and keeps reflection where it pays — at the hard
levels.
"""),
        code("nh.metrics_table(run_dir)"),
    ],
    "03_adar1.ipynb": [
        md("""
# 3 · Ada-R1: adaptive long and short reasoning

Ada-R1 (Luo et al. 2025) starts from a linear merge of the long (slow) and short-CoT models,
θ_M = α·θ_L + (1−α)·θ_S with α = 0.8, then teaches it *when* to think long with bi-level
preference optimisation: K responses per training problem are sampled from each model; at the
**group level** the style with the higher accuracy (by more than 1/(2K)) is preferred, at the
**instance level** the shortest correct response of the preferred group beats its longest ones;
DPO on these pairs gives Ada-R1. The long model, the plain merge and each Ada-R1 variant are then
evaluated greedily, and compared by level (Luo et al. Figs. 4-6: the long-CoT ratio should rise with
difficulty).
"""),
        parameters("""
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
"""),
        code(SETUP + """

from l2s import notebook_helpers as nh
from l2s.adar1 import AdaR1Config, run_adar1"""),
        code("""models = nh.read_models(models_run)
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
pd.Series({name: str(run) for name, run in result["eval_runs"].items()}, name="evaluation run")"""),
        md("The long model, the merge and Ada-R1, level by level:"),
        code("""nh.runs_by_level(result["eval_runs"])"""),
    ],
    "04_figures.ipynb": [
        md("""
# 4 · Figures

Every figure is regenerated from the saved runs alone (no model is loaded): each run's tags and
`metrics.json` are read, measured values are drawn beside the numbers the papers report (labelled
“reported (paper, table)”; values read off a figure are labelled as estimates), and each figure is
written as PNG, PDF and the CSV of the data behind it.

- **length_accuracy** — length reduction vs the slow model and accuracy, per method and size (Wu et al. Tables 1-4);
- **self_correction** — reflective-response ratio and keyword hits per response (Table 6);
- **difficulty** — length and reflective ratio by difficulty level (Fig. 2a/2b);
- **adar1_by_level** — Ada-R1's long-CoT ratio, accuracy and length by level (Luo et al. Figs. 4-6);
- **pareto** — accuracy vs length over the α sweep and all methods.
"""),
        parameters("""
run_dir = "runs/figures"   # where the study keeps this executed notebook
runs_dir = "runs"          # the runs to draw
out_dir = "figures"        # where the figures go
"""),
        code(SETUP + """

from pathlib import Path
from IPython.display import Image
from l2s.figures import make_figures"""),
        code("""written = make_figures(runs_dir, out_dir)
for name, files in written.items():
    display(name, Image(filename=str(next(p for p in files if Path(p).suffix == ".png"))))"""),
    ],
    "05_explore.ipynb": [
        md("""
# 5 · Explore: two runs, side by side

Numbers hide what changed in the text. Load any two evaluation runs — say the slow model and a
merge — and read their answers to the same problems next to each other, with their lengths and
reflection-keyword hits. Where the merge is shorter, did it drop the double-check, the chain of
thought, or the answer?
"""),
        parameters("""
run_dir = None                    # unused: this notebook only reads runs
run_a = "runs/toy-s-slow"
run_b = "runs/toy-s-task_arithmetic"
dataset = None                    # only this dataset (None: all)
level = None                      # only this level (None: n per level)
n = 2                             # problems per level
"""),
        code(SETUP + "\n\nfrom l2s import notebook_helpers as nh"),
        code('print("A:", nh.run_label(run_a), "\\nB:", nh.run_label(run_b))\nnh.compare_by_level(run_a, run_b)'),
        code("nh.side_by_side(run_a, run_b, n=n, dataset=dataset, level=level)"),
    ],
}


def build(out_dir: Path = HERE) -> list[Path]:
    written = []
    for name, cells in NOTEBOOKS.items():
        nb = nbformat.v4.new_notebook()
        nb.cells = cells
        nb.metadata["kernelspec"] = KERNEL
        nb.metadata["language_info"] = {"name": "python"}
        for i, cell in enumerate(nb.cells):  # stable ids: same script -> same bytes
            cell["id"] = f"{Path(name).stem}-{i}"
        path = out_dir / name
        nbformat.write(nb, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in build():
        print(p)
