"""Victim benchmarks on Gowalla (given split) and ML-1M pairs (per-user 80/20, seed 0).

  python bench/victims.py wrmf-vs-implicit   # WRMF fit time and Recall@20 vs implicit's CPU ALS, same settings
                                             # and threads
  python bench/victims.py lightgcn-epoch     # LightGCN seconds per epoch, peak RSS, and a torch.profiler breakdown
  python bench/victims.py eval               # full-ranking evaluation vs the bare user x item score product
  python bench/victims.py lightgcn-steps     # ms per LightGCN training step on Gowalla at batches 2048, 4096, 16384
  python bench/victims.py last-layer         # a batch's last LightGCN layer from the row sub-matrix vs in full, and the
                                             # ML-1M training step of LightGCN / SGL / SimGCL with either (batch 16384)
  python bench/victims.py row-gathers       # ms per training step with take_rows (index_select) vs advanced indexing,
                                             # LightGCN / MF-BPR / SGL / SimGCL at batch 16384, and SimGCL with
                                             # cl_nodes 2048
  python bench/victims.py contrast-nodes    # ms per SimGCL step on ML-1M at cl_nodes 0 (every batch node), 2048, 1024
  python bench/victims.py dns-steps         # ms per LightGCN step on Gowalla at dns_candidates 0 (uniform), 16, 64
  python bench/victims.py curves [--budget configs/victims/cpu_budget.yaml] [--only gowalla:lightgcn]
                                             # every victim trained under a budget, test Recall/NDCG@20 per evaluation
  python bench/victims.py contrastive [--out docs/results/contrastive_ml100k.json]
                                             # SGL / SimGCL weights and temperatures on ML-100K validation, and the
                                             # gradient norms of their BPR and contrastive terms at initialisation
Each prints its table; results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml
from common import REPO, machine, recipes, shared_data

from distrec.data.dataset import PreparedDataset, prepare, write_prepared
from distrec.data.matrix import UserItemCSR
from distrec.data.preprocess import PrepareConfig
from distrec.data.readers import read_source
from distrec.memory import peak_rss_mb
from distrec.metrics.ranking import full_ranking_metrics
from distrec.models import create_victim

warnings.filterwarnings("ignore", category=FutureWarning)
CACHE = Path(tempfile.gettempdir()) / "distrec-bench"


def dataset(name: str) -> PreparedDataset:
    """The prepared benchmark dataset, built once into a temporary cache."""
    out = CACHE / name
    if (out / "metadata.json").exists():
        return PreparedDataset(out)
    recipe = recipes()[name]
    raw = read_source(recipe["format"], shared_data() / recipe["root"])
    return write_prepared(*prepare(raw, PrepareConfig(**recipe["prepare"]), recipe["format"]), out)


def csrs(ds: PreparedDataset, held_out: str = "test"):
    """The training split and a held-out split as CSR matrices."""
    return UserItemCSR.from_table(ds.table("train"), ds.n_users, ds.n_items), UserItemCSR.from_table(
        ds.table(held_out), ds.n_users, ds.n_items
    )


WRMF_RUNS = ("distrec wrmf (cg)", "implicit ALS (cg)", "distrec wrmf (cg), implicit's initial factors")


def wrmf_vs_implicit(seeds=(0, 1, 2)) -> None:
    """Each fit in a fresh process, the three kinds in turn: in one process the libraries' OpenMP pools
    (torch's and implicit's) spin after their parallel regions and slow whichever runs next."""
    rows = {name: [] for name in WRMF_RUNS}
    for seed in seeds:
        for kind in range(len(WRMF_RUNS)):
            argv = [sys.executable, __file__, "wrmf-once", str(kind), str(seed)]
            proc = subprocess.run(argv, capture_output=True, text=True, check=True)
            rows[WRMF_RUNS[kind]].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(
        f"machine: {machine()}, torch threads {torch.get_num_threads()}; Gowalla, factors 64, 15 iterations, alpha "
        f"10.0, reg 0.01, seeds {list(seeds)}, each fit in a fresh process"
    )
    for name, runs in rows.items():
        secs, rec = [r["seconds"] for r in runs], [r["recall@20"] for r in runs]
        print(
            f"{name:>46}: fit median {statistics.median(secs):.2f}s (runs {', '.join(f'{s:.2f}' for s in secs)}); "
            f"recall@20 mean {np.mean(rec):.4f} ({', '.join(f'{r:.4f}' for r in rec)}); ndcg@20 mean "
            f"{np.mean([r['ndcg@20'] for r in runs]):.4f}"
        )


def wrmf_once(kind: int, seed: int, factors=64, iterations=15, alpha=10.0, reg=0.01) -> None:
    """One fit of ``WRMF_RUNS[kind]``; prints its seconds and accuracy as JSON."""
    ds = dataset("gowalla")
    train, test = csrs(ds)
    threads = torch.get_num_threads()
    if kind == 1:
        import scipy.sparse as sp
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        t = ds.table("train")
        # implicit's C_ui is the matrix value: pass 1 + alpha * r, alpha=1 (same objective; tested equal accuracy)
        conf = sp.csr_matrix(
            (
                np.full(t.num_rows, 1 + alpha, np.float32),
                (t.column("user_id").to_numpy(), t.column("item_id").to_numpy()),
            ),
            shape=(ds.n_users, ds.n_items),
        )
        als = AlternatingLeastSquares(
            factors=factors,
            iterations=iterations,
            regularization=reg,
            alpha=1.0,
            num_threads=threads,
            random_state=seed,
            calculate_training_loss=False,
        )
        with threadpool_limits(1, "blas"):
            t0 = time.perf_counter()
            als.fit(conf, show_progress=False)
            elapsed = time.perf_counter() - t0
        x, y = torch.from_numpy(np.asarray(als.user_factors)), torch.from_numpy(np.asarray(als.item_factors))
        metrics = full_ranking_metrics(lambda u: x[u] @ y.T, train, test, (20,))
    else:
        model = create_victim(
            "wrmf", ds.n_users, ds.n_items, factors=factors, iterations=iterations, alpha=alpha, reg=reg, seed=seed
        )
        if kind == 2:  # the same initial factors as implicit draws them (fit() starts from the model's factors)
            rs = np.random.default_rng(seed)  # as implicit.utils.check_random_state(seed)
            with torch.no_grad():
                model.user_factors.copy_(torch.from_numpy(rs.random((ds.n_users, factors), dtype=np.float32) * 0.01))
                model.item_factors.copy_(torch.from_numpy(rs.random((ds.n_items, factors), dtype=np.float32) * 0.01))
        t0 = time.perf_counter()
        model.fit(ds, progress=False)
        elapsed = time.perf_counter() - t0
        metrics = full_ranking_metrics(model.score, train, test, (20,))
    print(json.dumps({"seconds": elapsed, "recall@20": metrics["recall@20"], "ndcg@20": metrics["ndcg@20"]}))


def lightgcn_epoch(epochs: int = 3, profile_batches: int = 20) -> None:
    ds = dataset("gowalla")
    model = create_victim(
        "lightgcn", ds.n_users, ds.n_items, epochs=epochs, batch_size=2048, layers=3, dim=64, backend="memory"
    )
    times = []
    t0 = time.perf_counter()
    model.fit(ds, progress=False, on_epoch=lambda r: times.append(time.perf_counter() - t0 - sum(times)))
    print(f"machine: {machine()}; LightGCN Gowalla, 3 layers, dim 64, batch 2048")
    print(
        f"seconds per epoch: median {statistics.median(times):.1f} (epochs {', '.join(f'{t:.1f}' for t in times)}); "
        f"peak RSS {peak_rss_mb():.0f} MB"
    )
    from torch.profiler import ProfilerActivity, profile

    from distrec.data.streaming import InteractionStream

    stream = InteractionStream(ds, batch_size=2048, backend="memory")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    batches = iter(stream.epoch(99))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(profile_batches):
            b = next(batches)
            loss = model.loss(b["user_id"], b["item_id"], b["neg_item"][:, 0])
            opt.zero_grad()
            loss.backward()
            opt.step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def lightgcn_steps(batches=(2048, 4096, 16384), steps: int = 10) -> None:
    """Milliseconds per training step (loss, backward, Adam) of LightGCN on Gowalla, median of ``steps``."""
    from distrec.data.streaming import InteractionStream

    ds = dataset("gowalla")
    print(f"machine: {machine()}, torch threads {torch.get_num_threads()}")
    for batch in batches:
        model = create_victim("lightgcn", ds.n_users, ds.n_items, batch_size=batch, layers=3, dim=64, backend="memory")
        model.prepare_fit(ds, torch.device("cpu"))
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        batches_ = iter(InteractionStream(ds, "train", batch_size=batch, backend="memory").epoch(0))

        def step():
            b = next(batches_)
            opt.zero_grad()
            model.loss(b["user_id"], b["item_id"], b["neg_item"][:, 0]).backward()
            opt.step()

        print(f"batch {batch}: {_median_ms(step, steps):.0f} ms per step (median of {steps})", flush=True)


def _median_ms(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def _batch_nodes(ds: PreparedDataset, batch: int, rng: np.random.Generator) -> torch.Tensor:
    train = ds.table("train")
    users, items = train.column("user_id").to_numpy(), train.column("item_id").to_numpy()
    rows = rng.integers(0, len(users), batch)
    neg = rng.integers(0, ds.n_items, batch)
    return torch.unique(torch.from_numpy(np.concatenate([users[rows], items[rows] + ds.n_users, neg + ds.n_users])))


def last_layer(batches=(1024, 4096, 16384)) -> None:
    """(A~ h)[nodes] with its backward, for the nodes of a training batch: the two paths of
    ``LightGCNPropagation._last_layer``; then whole training steps with the row path forced (the peer)."""
    from distrec.models.graph import LightGCNPropagation, rows_nnz_share

    print(f"machine: {machine()}, torch threads {torch.get_num_threads()}")
    rng = np.random.default_rng(0)
    for name in ("ml-1m", "gowalla"):
        ds = dataset(name)
        model = create_victim("lightgcn", ds.n_users, ds.n_items).attach(ds)
        adj, prop = model.adj, model.propagation
        h = torch.randn(adj.shape[0], 64, requires_grad=True)
        for batch in batches:
            nodes = _batch_nodes(ds, batch, rng)
            share = rows_nnz_share(adj, nodes)
            times = {}
            for path, threshold in (("rows", 1.0), ("full", 0.0)):
                prop.rows_max_nnz_share = threshold
                times[path] = _median_ms(lambda: prop._last_layer(h, adj, nodes).sum().backward())
            print(
                f"{name} batch {batch}: {len(nodes)} of {adj.shape[0]} nodes, {share:.2f} of the non-zeros; row "
                f"sub-matrix {times['rows']:.1f} ms, full {times['full']:.1f} ms"
            )
    ds = dataset("ml-1m")
    configs = {"lightgcn": {}, "sgl": {"ssl_reg": 0.01}, "simgcl": {"cl_temp": 1.0}}
    for victim, extra in configs.items():
        model = create_victim(victim, ds.n_users, ds.n_items, dim=64, layers=3, lr=0.01, batch_size=16384, **extra)
        model.prepare_fit(ds, torch.device("cpu"))
        model.start_epoch(0)
        model.train()
        users, items, neg = (torch.from_numpy(rng.integers(0, n, 16384)) for n in (ds.n_users, ds.n_items, ds.n_items))
        times = {}
        for path, threshold in (("rows", 1.0), ("chosen", LightGCNPropagation.rows_max_nnz_share)):
            model.propagation.rows_max_nnz_share = threshold
            times[path] = _median_ms(lambda: model.loss(users, items, neg).backward(), repeats=3)
        print(
            f"ml-1m {victim} step, batch 16384: row sub-matrix always {times['rows']:.0f} ms, chosen path "
            f"{times['chosen']:.0f} ms"
        )


def _alternating_ms(runs: dict, batches: list, steps: int) -> dict[str, float]:
    """Median milliseconds per training step (loss, backward, Adam) of each run, the runs alternating step
    by step on the same batches (the first step of each warms up). A run is ``(before, model, opt)``;
    ``before()`` sets the run up before each of its steps."""
    times = {name: [] for name in runs}
    for k in range(steps + 1):
        b = batches[k % len(batches)]
        for name, (before, model, opt) in runs.items():
            before()
            t = time.perf_counter()
            opt.zero_grad()
            model.loss(b["user_id"], b["item_id"], b["neg_item"][:, 0]).backward()
            opt.step()
            if k:
                times[name].append(1000 * (time.perf_counter() - t))
    return {name: statistics.median(v) for name, v in times.items()}


def _training_model(ds: PreparedDataset, victim: str, lr: float, **config):
    """A victim ready to step on ``ds`` at batch 16384, with its Adam optimiser."""
    model = create_victim(victim, ds.n_users, ds.n_items, dim=64, lr=lr, batch_size=16384, **config)
    model.prepare_fit(ds, torch.device("cpu"))
    model.start_epoch(0)
    model.train()
    return model, torch.optim.Adam(model.parameters(), lr=lr)


def _epoch_batches(ds: PreparedDataset) -> list:
    from distrec.data.streaming import InteractionStream

    return list(InteractionStream(ds, "train", batch_size=16384, backend="memory").epoch(0))


def row_gathers(steps: int = 9) -> None:
    """Milliseconds per training step with ``take_rows`` against advanced indexing (the peer, patched into
    the same modules), alternating step by step on the same batches; median of ``steps``."""
    import distrec.models.graph as graph_module
    import distrec.models.lightgcn as lightgcn_module
    import distrec.models.mf_bpr as mf_bpr_module

    gathers = {"take_rows": lightgcn_module.take_rows, "indexing": lambda table, index: table[index]}

    def use(gather):
        def before():
            for module in (graph_module, lightgcn_module, mf_bpr_module):
                module.take_rows = gather

        return before

    cells = [
        ("gowalla", "lightgcn", {}),
        ("ml-1m", "lightgcn", {}),
        ("ml-1m", "bpr", {}),
        ("ml-1m", "sgl", {"ssl_reg": 0.01}),
        ("ml-1m", "simgcl", {"cl_temp": 1.0, "cl_reg": 0.5}),
        ("ml-1m", "simgcl", {"cl_temp": 1.0, "cl_reg": 0.5, "cl_nodes": 2048}),
    ]
    print(f"machine: {machine()}, torch threads {torch.get_num_threads()}")
    for data, victim, extra in cells:
        ds = dataset(data)
        model, opt = _training_model(ds, victim, 0.01, **extra)
        ms = _alternating_ms(
            {name: (use(gather), model, opt) for name, gather in gathers.items()}, _epoch_batches(ds), steps
        )
        use(gathers["take_rows"])()
        print(
            f"{data} {victim} {extra}: take_rows {ms['take_rows']:.0f} ms, indexing {ms['indexing']:.0f} ms per step "
            f"({ms['indexing'] / ms['take_rows']:.2f}x)",
            flush=True,
        )


def contrast_nodes(budgets=(0, 2048, 1024), steps: int = 9) -> None:
    """Milliseconds per SimGCL training step on ML-1M (batch 16384, cl_temp 1, cl_reg 0.5) at each
    ``cl_nodes`` budget, alternating the budgets step by step on the same batches; median of ``steps``."""
    ds = dataset("ml-1m")
    print(f"machine: {machine()}, torch threads {torch.get_num_threads()}")
    runs = {
        n: (lambda: None, *_training_model(ds, "simgcl", 0.02, cl_temp=1.0, cl_reg=0.5, cl_nodes=n)) for n in budgets
    }
    for n, ms in _alternating_ms(runs, _epoch_batches(ds), steps).items():
        print(f"cl_nodes {n}: {ms:.0f} ms per step (median of {steps})")


def dns_steps(candidates=(0, 16, 64), steps: int = 9) -> None:
    """Milliseconds per LightGCN training step on Gowalla (batch 16384) at each ``dns_candidates``,
    alternating step by step on the same batches; median of ``steps`` (0: the stream's uniform negative)."""
    ds = dataset("gowalla")
    print(f"machine: {machine()}, torch threads {torch.get_num_threads()}")
    runs = {n: (lambda: None, *_training_model(ds, "lightgcn", 0.01, dns_candidates=n)) for n in candidates}
    for n, ms in _alternating_ms(runs, _epoch_batches(ds), steps).items():
        print(f"dns_candidates {n}: {ms:.0f} ms per step (median of {steps})")


def evaluation(repeats: int = 3) -> None:
    ds = dataset("gowalla")
    train, test = csrs(ds)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(ds.n_users, 64, generator=gen), torch.randn(ds.n_items, 64, generator=gen)
    users = torch.as_tensor(np.flatnonzero(test.degrees() > 0))
    bare, full = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in range(0, len(users), 1024):
            x[users[s : s + 1024]] @ y.T
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        full_ranking_metrics(lambda u: x[u] @ y.T, train, test, (20,))
        full.append(time.perf_counter() - t0)
    b, f = statistics.median(bare), statistics.median(full)
    print(
        f"machine: {machine()}; Gowalla, {len(users)} test users x {ds.n_items} items, dim 64, K=20, chunks of 1024 "
        "users"
    )
    print(f"bare score product: median {b:.2f}s (runs {', '.join(f'{t:.2f}' for t in bare)})")
    print(
        f"full evaluation (mask, top-K, recall/ndcg/precision/hr): median {f:.2f}s (runs "
        f"{', '.join(f'{t:.2f}' for t in full)}) = {f / b:.2f}x"
    )


def curves(budget: str, only: list[str] | None, out: str | None) -> None:
    plan = yaml.safe_load((REPO / budget).read_text())
    results = []
    for data_name, victims in plan.items():
        for victim, config in victims.items():
            if only and f"{data_name}:{victim}" not in only:
                continue
            # each cell in a fresh process: its peak RSS and timing are its own
            cmd = [sys.executable, __file__, "one-curve", data_name, victim, json.dumps(config)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                print(f"{data_name} {victim}: failed\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            evals = [h for h in r["history"] if "valid_recall@20" in h]
            curve = ", ".join(f"ep{h['epoch'] + 1}: {h['valid_recall@20']:.4f}" for h in evals)
            # the result is the last epoch; the best epoch was picked on the test split and is shown for reference only
            print(
                f"{data_name:>8} {victim:>9}: last epoch recall@20 {evals[-1]['valid_recall@20']:.4f} ndcg@20 "
                f"{evals[-1]['valid_ndcg@20']:.4f} "
                f"| {r['seconds_per_epoch']:.1f} s/epoch, {len(r['history'])} epochs, peak RSS {r['peak_rss_mb']:.0f} "
                f"MB | curve {curve}",
                flush=True,
            )
    if out:  # cells run now replace their earlier entries; the others are kept
        path = Path(out)
        ran = {(r["data"], r["victim"]) for r in results}
        kept = [r for r in json.loads(path.read_text()) if (r["data"], r["victim"]) not in ran] if path.exists() else []
        path.write_text(json.dumps(kept + results, indent=2))


CONTRASTIVE_GRID = (
    [("lightgcn", {})]
    + [("sgl", {"ssl_reg": w}) for w in (0.005, 0.01, 0.02, 0.05, 0.1)]
    + [("simgcl", {"cl_reg": w}) for w in (0.005, 0.02, 0.2)]
    + [("simgcl", {"cl_temp": t}) for t in (0.5, 1.0)]
    + [("simgcl", {"cl_temp": 1.0, "cl_reg": 0.02})]
)


def term_gradients(ds: PreparedDataset, victim: str, config: dict) -> dict:
    """Norms of the gradients of the BPR term and of the contrastive term w.r.t. the embedding table,
    on the first training batch at initialisation."""
    from distrec.data.streaming import InteractionStream

    model = create_victim(victim, n_users=ds.n_users, n_items=ds.n_items, **config)
    model.prepare_fit(ds, torch.device("cpu"))
    model.start_epoch(0)
    model.train()
    batch = next(
        iter(InteractionStream(ds, "train", batch_size=model.config.batch_size, seed=0, backend="memory").epoch(0))
    )
    users, pos, neg = batch["user_id"], batch["item_id"], batch["neg_item"][:, 0]
    rec = model.rec_loss(users, pos, *model.batch_triples(users, pos, neg))
    g_rec = torch.autograd.grad(rec, model.embedding)[0]
    g_total = torch.autograd.grad(model.loss(users, pos, neg), model.embedding)[0]
    return {"grad_bpr": float(g_rec.norm()), "grad_contrastive": float((g_total - g_rec).norm())}


def contrastive(out: str | None, epochs: int = 15) -> None:
    ds = dataset("ml-100k")
    train, valid = csrs(ds, "valid")
    print(
        f"machine: {machine()}; ML-100K, per-user 70/10/20 split (seed 0), {epochs} epochs, validation Recall@20 "
        "after each"
    )
    results = []
    for victim, config in CONTRASTIVE_GRID:
        row = {
            "victim": victim,
            "config": config,
            **(term_gradients(ds, victim, config) if victim != "lightgcn" else {}),
        }
        model = create_victim(victim, n_users=ds.n_users, n_items=ds.n_items, epochs=epochs, **config)
        curve = []
        model.fit(
            ds,
            progress=False,
            on_epoch=lambda r: curve.append(full_ranking_metrics(model.score, train, valid, (20,))["recall@20"]),
        )
        row["valid_recall@20"] = curve
        results.append(row)
        grads = (
            f"| grad BPR {row['grad_bpr']:.2e}, contrastive {row['grad_contrastive']:.2e} " if "grad_bpr" in row else ""
        )
        print(
            f"{victim:>8} {json.dumps(config):<34} {grads}| Recall@20 ep1 {curve[0]:.4f} ep5 {curve[4]:.4f} "
            f"ep{epochs} {curve[-1]:.4f}",
            flush=True,
        )
    if out:
        Path(out).write_text(json.dumps(results, indent=2))


def one_curve(data_name: str, victim: str, config: str) -> None:
    from distrec.workflows.train import train_victim

    ds = dataset(data_name)
    # the learning curve is measured on the test split (no model selection: training runs its full budget)
    cfg = json.loads(config)
    cfg.setdefault("patience", 10_000)
    result = train_victim(victim, ds.uri, cfg, valid_split="test", ks=(20,), progress=False)
    print(
        json.dumps(
            {
                "data": data_name,
                **{
                    k: result[k]
                    for k in (
                        "victim",
                        "config",
                        "metrics",
                        "fit_seconds",
                        "seconds_per_epoch",
                        "peak_rss_mb",
                        "history",
                    )
                },
            },
            default=float,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "what",
        choices=[
            "wrmf-vs-implicit",
            "wrmf-once",
            "lightgcn-epoch",
            "lightgcn-steps",
            "eval",
            "last-layer",
            "row-gathers",
            "contrast-nodes",
            "dns-steps",
            "curves",
            "one-curve",
            "contrastive",
        ],
    )
    parser.add_argument("args", nargs="*")
    parser.add_argument("--budget", default="configs/victims/cpu_budget.yaml")
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--out")
    a = parser.parse_args()
    if a.what == "wrmf-vs-implicit":
        wrmf_vs_implicit()
    elif a.what == "wrmf-once":
        wrmf_once(int(a.args[0]), int(a.args[1]))
    elif a.what == "lightgcn-epoch":
        lightgcn_epoch()
    elif a.what == "lightgcn-steps":
        lightgcn_steps()
    elif a.what == "eval":
        evaluation()
    elif a.what == "last-layer":
        last_layer()
    elif a.what == "row-gathers":
        row_gathers()
    elif a.what == "contrast-nodes":
        contrast_nodes()
    elif a.what == "dns-steps":
        dns_steps()
    elif a.what == "curves":
        curves(a.budget, a.only, a.out)
    elif a.what == "contrastive":
        contrastive(a.out)
    else:
        one_curve(*a.args)


if __name__ == "__main__":
    main()
