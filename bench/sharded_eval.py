"""Full-ranking evaluation on Gowalla (29,858 test users x 40,981 items, training items masked, Recall/NDCG/
Precision/HR at 20): the bare score product (every test user's scores, nothing masked or ranked), the
one-pass evaluation, and the same sharded over user blocks in Ray tasks and in victim-host actors, each
checked equal to the one-pass numbers to the last digit. Victim: WRMF, 64 factors, 15 iterations.

    .venv/bin/python bench/sharded_eval.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import ray
import torch
from common import machine, shared_data

from distrec.data.matrix import UserItemCSR
from distrec.data.spec import DatasetSpec, materialise_dataset
from distrec.distributed.runtime import init_ray
from distrec.distributed.victim_host import VictimHost
from distrec.evaluation.sharded import sharded_full_ranking_metrics
from distrec.metrics.ranking import evaluated_users, full_ranking_metrics
from distrec.models.registry import create_victim


def timed(fn, repeats: int) -> tuple[float, list[float], object]:
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/runs/sharded_eval")
    ap.add_argument("--chunk-users", type=int, default=1024)
    args = ap.parse_args()
    spec = DatasetSpec(format="lightgcn", root=str(shared_data() / "lightgcn/gowalla"), prepare={"split": "given"})
    data = materialise_dataset(spec, args.out)
    torch.set_num_threads(2)
    model = create_victim("wrmf", data.n_users, data.n_items, factors=64, iterations=15, alpha=10.0, reg=0.01)
    model.fit(data, progress=False)
    model.eval()
    folder = model.save(f"{args.out}/wrmf")
    train = UserItemCSR.from_table(data.table("train"), data.n_users, data.n_items)
    test = UserItemCSR.from_table(data.table("test"), data.n_users, data.n_items)
    ks, chunk = (20,), args.chunk_users
    users = evaluated_users(test)

    @torch.no_grad()
    def bare():
        for s in range(0, len(users), chunk):
            model.score(torch.as_tensor(users[s : s + chunk]))

    rows = {}
    rows["bare score product, 2 threads"] = timed(bare, args.repeats)
    rows["one pass, 2 threads"] = timed(lambda: full_ranking_metrics(model.score, train, test, ks, chunk), args.repeats)
    reference = rows["one pass, 2 threads"][2]
    init_ray(num_cpus=2)
    for shards, cpus in ((1, 2), (2, 1), (8, 1)):
        rows[f"{shards} Ray task(s) of {cpus} CPU"] = timed(
            lambda s=shards, c=cpus: sharded_full_ranking_metrics(model, train, test, ks, s, chunk, num_cpus=c),
            args.repeats,
        )
    hosts = [VictimHost.options(num_cpus=1).remote(str(folder), None, 1) for _ in range(2)]
    ray.get([h.pid.remote() for h in hosts])  # loaded before timing: hosts serve many evaluations
    rows["2 victim hosts of 1 CPU, 8 blocks"] = timed(
        lambda: sharded_full_ranking_metrics(None, train, test, ks, 8, chunk, hosts=hosts), args.repeats
    )
    ray.shutdown()
    bare_median = rows["bare score product, 2 threads"][0]
    report = {"machine": machine(), "users": int(len(users)), "items": int(data.n_items), "recall@20": reference}
    print(f"{machine()}; {len(users)} users x {data.n_items} items; Recall@20 {reference['recall@20']:.6f}")
    print("| evaluation | median s | runs s | x bare | equal to one pass |")
    print("|---|---|---|---|---|")
    for name, (median, times, value) in rows.items():
        equal = "-" if name.startswith("bare") else ("yes" if value == reference else "NO")
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(f"| {name} | {median:.2f} | {runs} | {median / bare_median:.2f} | {equal} |")
        report[name] = {"median_s": median, "runs_s": times, "equal": equal}
    with open(f"{args.out}/report.json", "w") as f:
        json.dump(report, f, indent=2, default=float)
    if any(r["equal"] == "NO" for r in report.values() if isinstance(r, dict) and "equal" in r):
        raise SystemExit("a sharded evaluation differs from the one-pass numbers")


if __name__ == "__main__":
    main()
