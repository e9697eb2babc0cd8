"""Benchmark of ``l2s merge`` against a naive full-load merge and mergekit.

    python bench/merge_bench.py [--workdir /tmp/l2s_merge_bench] [--size 1gb|200mb|20mb] [--only TEXT] [--keep]

Builds three random Qwen2 checkpoints of about 1 GB fp32 each (4 shards; the models are the base
plus small random task vectors; ``--size 200mb``/``20mb`` for quick looks), then runs each merge as a
separate process and reports its wall time and peak resident memory (``os.wait4``'s ru_maxrss; this
process never imports torch, because a child's ru_maxrss starts from its parent's peak). Every run
gets the same thread cap: this shell's OMP_NUM_THREADS, else all cores. A baseline row shows what
``import torch`` alone costs.

- l2s ``task_arithmetic``, ``ties`` (k=0.8) and ``dare+ties`` (p=0.3, k=0.8);
- a naive merge that loads every model whole and merges flattened vectors, like the published code
  (MergeLM): task arithmetic and TIES with a whole-model TRIM;
- mergekit (``mergekit-yaml`` with its default options, ``normalize: false``, ``density = 1 - k``,
  output shards of 75M parameters = 300 MB like the others), installed by this script into its own
  virtual environment under ``.cache/merge_bench/`` (ignored by git); if it cannot be installed the
  table says so. mergekit reads ``architectures`` from each config.json (``save_pretrained`` of a
  model writes it; of a bare config it does not, hence the explicit field below).

Goals of issue 4, in the same run: peak RSS <= 0.5x mergekit's and <= 0.25x naive; wall time <= 0.7x
mergekit's for TA and <= 0.25x for TIES. Big files live under the work dir and are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "merge_bench"
SIZES = {  # Qwen2 shapes: ≈1.08 GB fp32 (the benchmark), ≈230 MB (profiling), ≈20 MB (smoke test)
    "1gb": dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=16,
                num_attention_heads=16, num_key_value_heads=16),
    "200mb": dict(vocab_size=32000, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=8),
    "20mb": dict(vocab_size=4000, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=4),
}
N_SHARDS = 4
MERGEKIT = "0.1.5"  # the version compared (pinned so that reruns compare the same thing)
SHARD_BYTES = 300_000_000  # output shards of every tool: 300 MB (mergekit counts parameters: 75M fp32)

NAIVE = textwrap.dedent('''
    # A naive merge like the published code: every model whole in memory, flattened task vectors.
    import glob, json, os, shutil, sys, torch
    from safetensors.torch import load_file, save_file
    method, base_dir, out, *models = sys.argv[1:]
    load = lambda d: {k: v for f in sorted(glob.glob(d + "/*.safetensors")) for k, v in load_file(f).items()}
    base = load(base_dir)
    names = sorted(base)
    flat_base = torch.cat([base[n].reshape(-1) for n in names])
    deltas = torch.stack([torch.cat([m[n].reshape(-1) for n in names]) - flat_base for m in map(load, models)])
    if method == "ties":
        k = int(0.8 * deltas.shape[1])
        kth = deltas.abs().kthvalue(k, dim=1, keepdim=True).values
        deltas = deltas * (deltas.abs() > kth)
        sign = torch.sign(deltas.sum(0))
        agree = (torch.sign(deltas) == sign) & (deltas != 0)
        merged = flat_base + (deltas * agree).sum(0) / agree.sum(0).clamp_min(1)
    else:
        merged = flat_base + deltas.sum(0)
    out_sd, i = {}, 0
    for n in names:
        out_sd[n] = merged[i:i + base[n].numel()].reshape(base[n].shape).clone(); i += base[n].numel()
    os.makedirs(out, exist_ok=True)
    save_file(out_sd, out + "/model.safetensors", metadata={"format": "pt"})
    shutil.copy(base_dir + "/config.json", out)
''')


def shard_bytes_for(entries: list, n: int) -> int:
    """The smallest shard size that splits ``entries`` (in order) into at most ``n`` shards."""
    from l2s.merge.checkpoint import plan_shards

    lo, hi = 1, sum(torch_nbytes(dtype, shape) for _, dtype, shape in entries)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if len(plan_shards(entries, mid)) <= n else (mid + 1, hi)
    return lo


def torch_nbytes(dtype, shape) -> int:
    import torch

    return torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()


def build(workdir: Path, size: str) -> dict[str, Path]:
    """Three checkpoints: a random base and two models = base + N(0, 0.01²) task vectors, 4 shards each."""
    import torch
    import transformers

    from l2s.merge.checkpoint import ShardWriter

    cfg = transformers.Qwen2Config(**SIZES[size], max_position_embeddings=2048, tie_word_embeddings=False)
    cfg.architectures = ["Qwen2ForCausalLM"]  # what save_pretrained of a model writes; mergekit needs it
    with torch.device("meta"):
        shapes = {n: tuple(p.shape) for n, p in transformers.Qwen2ForCausalLM(cfg).state_dict().items()}
    total = sum(torch.Size(s).numel() * 4 for s in shapes.values())
    entries = [(n, torch.float32, s) for n, s in sorted(shapes.items())]
    shard_bytes = shard_bytes_for(entries, N_SHARDS)
    paths = {}
    for i, name in enumerate(["base", "m1", "m2"]):
        d = workdir / name
        d.mkdir(parents=True, exist_ok=True)
        w = ShardWriter(d, entries, shard_bytes)
        for n, s in sorted(shapes.items()):
            g = torch.Generator().manual_seed(zlib.crc32(n.encode()))
            t = torch.randn(s, generator=g) * 0.02
            if i:
                t += torch.randn(s, generator=torch.Generator().manual_seed(zlib.crc32(f"{n}:{i}".encode()))) * 0.01
            w.write(n, t)
        w.close()
        cfg.save_pretrained(d)
        paths[name] = d
    print(f"built 3 checkpoints of {total / 1e9:.2f} GB fp32, {len(list(paths['base'].glob('*.safetensors')))} "
          f"shards each, under {workdir}", flush=True)
    return paths


def measure(label: str, cmd: list[str], env=None) -> dict:
    """Run ``cmd`` as its own process; wall time and peak RSS of that process.

    Dirty pages left by earlier steps are flushed first (``os.sync``, not timed), so no run pays for
    another's writeback; a run's own fsyncs (l2s syncs each shard it writes) count against it.
    """
    os.sync()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    ok = os.waitstatus_to_exitcode(status) == 0
    row = {"run": label, "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "ok": ok}
    if not ok:
        row["error"] = err.decode(errors="replace").strip().splitlines()[-3:] or ["failed"]
    print(f"  {label:28s} {'ok' if ok else 'FAILED'}  {wall:7.1f} s  {row['peak_rss_mb']:8.0f} MB", flush=True)
    return row


def install_mergekit() -> tuple[Path | None, str]:
    """mergekit in its own venv (kept under .cache/ for the next run); (mergekit-yaml, version or why not)."""
    venv = CACHE / "mergekit-venv"
    exe, python = venv / "bin" / "mergekit-yaml", str(venv / "bin" / "python")
    try:
        if not exe.is_file():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pip = [python, "-m", "pip", "install", "-q"]
            subprocess.run(pip + ["torch==2.13.0"], check=True, timeout=900)  # first: the CPU build, not CUDA wheels
            subprocess.run(pip + [f"mergekit=={MERGEKIT}"], check=True, timeout=900)
        show = subprocess.run([python, "-m", "pip", "show", "mergekit"], capture_output=True, text=True, check=True)
        return exe, "mergekit " + show.stdout.split("Version:")[1].split()[0]
    except (subprocess.SubprocessError, OSError, IndexError) as e:
        shutil.rmtree(venv, ignore_errors=True)
        return None, f"mergekit could not be installed: {e}"


def mergekit_config(method: str, paths: dict[str, Path]) -> str:
    params = {"task_arithmetic": {"weight": 1.0}, "ties": {"weight": 1.0, "density": 0.2},
              "dare_ties": {"weight": 1.0, "density": 0.7}}[method]
    models = "\n".join(f"  - model: {paths[m]}\n    parameters: {json.dumps(params)}" for m in ("m1", "m2"))
    return (f"merge_method: {method}\nbase_model: {paths['base']}\nmodels:\n{models}\n"
            f"parameters:\n  normalize: false\ndtype: float32\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/l2s_merge_bench"))
    ap.add_argument("--size", choices=sorted(SIZES), default="1gb", help="checkpoint size (default: 1gb, the issue's)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints and outputs")
    ap.add_argument("--no-mergekit", action="store_true")
    ap.add_argument("--only", help="run only the runs whose label contains this text (e.g. 'ties', 'l2s')")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    work = args.workdir
    if args.build_only:
        build(work, args.size)
        return 0
    shutil.rmtree(work, ignore_errors=True)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows, version = [], "skipped (--no-mergekit)"
    threads = os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))
    try:
        # Built by a child process: this one must never import torch, because a child's ru_maxrss
        # starts at its parent's peak RSS (subprocess forks, and exec keeps the old peak).
        subprocess.run([sys.executable, __file__, "--build-only", "--size", args.size, "--workdir", str(work)],
                       check=True)
        paths = {name: work / name for name in ("base", "m1", "m2")}
        # Every tool runs with the same thread cap: this shell's OMP_NUM_THREADS, else all cores.
        env = {**os.environ, "OMP_NUM_THREADS": threads}
        models = [paths["m1"], paths["m2"]]
        runs: list[tuple[str, list[str] | None]] = [
            ("baseline: python -c 'import torch'", [sys.executable, "-c", "import torch"])]
        l2s = [sys.executable, "-m", "l2s", "merge", "--base", str(paths["base"]),
               "--models", ",".join(map(str, models)), "--shard-size", str(SHARD_BYTES)]
        for label, extra in [("l2s task_arithmetic", ["--method", "task_arithmetic", "--param", "alpha=1.0"]),
                             ("l2s ties k=0.8", ["--method", "ties", "--param", "k=0.8"]),
                             ("l2s dare+ties p=0.3 k=0.8",
                              ["--method", "dare+ties", "--param", "k=0.8", "--param", "p=0.3"])]:
            runs.append((label, l2s + extra + ["--out", str(work / label.split()[1])]))
        (work / "naive.py").write_text(NAIVE)
        for method in ("task_arithmetic", "ties"):
            runs.append((f"naive full-load {method}", [sys.executable, str(work / "naive.py"), method,
                                                        str(paths["base"]), str(work / f"naive-{method}"),
                                                        *map(str, models)]))
        wanted = lambda label: not args.only or args.only in label  # noqa: E731
        mk_methods = [m for m in ("task_arithmetic", "ties", "dare_ties") if wanted(f"mergekit {m}")]
        if mk_methods and not args.no_mergekit:
            exe, version = install_mergekit()
            for method in mk_methods:
                yml = work / f"mk-{method}.yml"
                yml.write_text(mergekit_config(method, paths))
                # mergekit's defaults otherwise (no --lazy-unpickle: it only concerns pickled .bin
                # inputs; no --low-cpu-memory: it keeps results on an accelerator); its shard size
                # counts parameters: 75M fp32 = 300 MB, like the others.
                runs.append((f"mergekit {method}", [str(exe), str(yml), str(work / f"mk-{method}"), "--out-shard-size",
                                                    f"{SHARD_BYTES // 4 // 10**6}M"] if exe else None))
        for label, cmd in runs:
            if cmd and (wanted(label) or label.startswith("baseline")):
                rows.append(measure(label, cmd, env))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.size} checkpoints, OMP_NUM_THREADS={threads} for every run, {os.cpu_count()} cores, "
          f"load average before: {load_before}")
    report(rows, version)
    return 0


def report(rows: list[dict], mergekit: str) -> None:
    by = {r["run"]: r for r in rows}
    print(f"\n{mergekit}\n")
    print("| run | wall (s) | peak RSS (MB) |\n|---|---:|---:|")
    for r in rows:
        status = "" if r["ok"] else " FAILED: " + " / ".join(r["error"])[:300]
        print(f"| {r['run']}{status} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    pairs = [("l2s task_arithmetic", "mergekit task_arithmetic", 0.7, 0.5),
             ("l2s ties k=0.8", "mergekit ties", 0.25, 0.5),
             ("l2s dare+ties p=0.3 k=0.8", "mergekit dare_ties", None, 0.5),
             ("l2s task_arithmetic", "naive full-load task_arithmetic", None, 0.25),
             ("l2s ties k=0.8", "naive full-load ties", None, 0.25)]
    print("\n| ratio | wall | peak RSS | goal |\n|---|---:|---:|---|")
    for a, b, wall_goal, rss_goal in pairs:
        if a in by and b in by and by[a]["ok"] and by[b]["ok"]:
            w, m = by[a]["wall_s"] / by[b]["wall_s"], by[a]["peak_rss_mb"] / by[b]["peak_rss_mb"]
            wall = f"wall <= {wall_goal} ({'met' if w <= wall_goal else 'missed'})" if wall_goal else ""
            rss = f"RSS <= {rss_goal} ({'met' if m <= rss_goal else 'missed'})"
            goal = ", ".join(g for g in [wall, rss] if g)
            print(f"| {a} / {b} | {w:.2f} | {m:.2f} | {goal} |")
        else:
            print(f"| {a} / {b} | n/a | n/a | not measured |")


if __name__ == "__main__":
    raise SystemExit(main())
