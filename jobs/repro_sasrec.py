"""SASRec check (docs/methods.md section 6): S3-Rec's full-ranking SASRec table on the Amazon Beauty, Sports and
Toys sequences (leave-one-out by time, the history masked), with the learning curve of each run.

    python jobs/repro_sasrec.py --datasets Beauty --loss ce --epochs 40 --results docs/results/sasrec_s3rec

Settings default to the table's (hidden 64, 2 layers, 2 heads, dropout 0.5, max length 50, Adam 1e-3,
batch 256, BCE with one negative); early stopping on the valid item's NDCG@10; ``--batching tokens``
(default) groups users by length (same objective, a fraction of the padding). A call adds its (dataset, loss)
runs to the existing results. Keys ``sasrec/<dataset>/<loss>/hr@K``, ``/ndcg@K`` (fractions), and
``sasrec/<dataset>/hr@K`` for the table's own setting (BCE) where it ran, else CE; ``<dataset>/<loss>/curve``
and ``meta``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyarrow as pa
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import machine, shared_data, write_report  # noqa: E402
from distrec.data.matrix import UserItemCSR  # noqa: E402
from distrec.data.spec import DatasetSpec, materialise_dataset  # noqa: E402
from distrec.metrics.ranking import full_ranking_metrics  # noqa: E402
from distrec.models import create_victim  # noqa: E402

# S3-Rec's full-ranking SASRec numbers (docs/methods.md section 6)
PAPER = {
    "Beauty": {
        "hr@5": 0.0387,
        "ndcg@5": 0.0249,
        "hr@10": 0.0605,
        "ndcg@10": 0.0318,
        "hr@20": 0.0902,
        "ndcg@20": 0.0394,
    },
    "Sports_and_Outdoors": {
        "hr@5": 0.0233,
        "ndcg@5": 0.0154,
        "hr@10": 0.0350,
        "ndcg@10": 0.0192,
        "hr@20": 0.0507,
        "ndcg@20": 0.0231,
    },
    "Toys_and_Games": {
        "hr@5": 0.0463,
        "ndcg@5": 0.0306,
        "hr@10": 0.0675,
        "ndcg@10": 0.0374,
        "hr@20": 0.0941,
        "ndcg@20": 0.0441,
    },
}


def check(name: str, out: Path, model_config: dict) -> dict:
    """Train on one dataset; test metrics, the learning curve and the time it took."""
    spec = DatasetSpec(
        format="sequence",
        root=str(shared_data() / "sequential/s3rec" / f"{name}.txt"),
        prepare={"split": "loo", "valid_ratio": 0.1, "seed": 0},
    )
    data = materialise_dataset(spec, str(out / name))
    model = create_victim("sasrec", data.n_users, data.n_items, **model_config)
    t0 = time.perf_counter()
    curve = []

    def on_epoch(record):
        curve.append(dict(record, seconds=round(time.perf_counter() - t0, 1)))
        if "valid_ndcg@10" in record:
            print(name, record, flush=True)

    model.fit(data, "valid", progress=False, on_epoch=on_epoch)
    fit_seconds = time.perf_counter() - t0
    model.eval().attach(data, ("train", "valid"))
    seen = UserItemCSR.from_table(
        pa.concat_tables([data.table("train"), data.table("valid")]), data.n_users, data.n_items
    )
    test = UserItemCSR.from_table(data.table("test"), data.n_users, data.n_items)
    with torch.no_grad():
        metrics = full_ranking_metrics(model.score, seen, test, (5, 10, 20))
    return {
        "dataset": name,
        "loss": model_config["loss"],
        "batching": model_config["batching"],
        "metrics": {k: round(v, 5) for k, v in metrics.items() if k.startswith(("hr@", "ndcg@"))},
        "curve": curve,
        "fit_seconds": round(fit_seconds, 1),
        "users": metrics["n_users"],
    }


def report(res: dict) -> str:
    lines = ["| data | loss | HR@5 | NDCG@5 | HR@10 | NDCG@10 | HR@20 | NDCG@20 | epochs | fit s |", "|---" * 10 + "|"]
    for r in sorted(res["meta"]["runs"].values(), key=lambda r: (r["dataset"], r["loss"])):
        cells = [
            f"{100 * r['metrics'][m]:.2f} ({100 * PAPER[r['dataset']][m]:.2f})"
            for m in ("hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20")
        ]
        lines.append(
            f"| {r['dataset']} | {r['loss']} | " + " | ".join(cells) + f" | {len(r['curve'])} | {r['fit_seconds']} |"
        )
    return "Percent; in brackets S3-Rec's table (BCE, one negative).\n\n" + "\n".join(lines) + "\n"


def earlier_runs(results: str | None) -> dict:
    """The runs an earlier call wrote to ``<results>.json`` (keyed ``<dataset>/<loss>``)."""
    if not results or not Path(f"{results}.json").exists():
        return {}
    meta = json.loads(Path(f"{results}.json").read_text())["meta"]
    runs = [
        dict(
            r,
            dataset=r.get("dataset", key),
            loss=r.get("loss") or meta["model"]["loss"],
            batching=r.get("batching", "users"),
        )
        for key, r in meta["runs"].items()
    ]
    return {f"{r['dataset']}/{r['loss']}": r for r in runs}


def result_keys(runs: dict) -> dict:
    res = {f"sasrec/{key}/{m}": v for key, r in runs.items() for m, v in r["metrics"].items()}
    for r in sorted(runs.values(), key=lambda r: r["loss"] != "bce"):  # the table's own loss first
        for m, v in r["metrics"].items():
            res.setdefault(f"sasrec/{r['dataset']}/{m}", v)
    res.update({f"{key}/curve": r["curve"] for key, r in runs.items()})
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(PAPER), choices=list(PAPER))
    ap.add_argument("--loss", default="bce", choices=["bce", "ce", "bpr"])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--batching", default="tokens", choices=["users", "tokens"])
    ap.add_argument("--out", default=str(REPO / "runs/sasrec_check"))
    ap.add_argument("--results", help="write <results>.json and <results>.md here")
    args = ap.parse_args()
    model = {
        "loss": args.loss,
        "epochs": args.epochs,
        "eval_every": args.eval_every,
        "patience": args.patience,
        "eval_metric": "ndcg@10",
        "batching": args.batching,
    }
    runs = earlier_runs(args.results)
    runs.update(
        {f"{name}/{args.loss}": dict(check(name, Path(args.out), model), model=model) for name in args.datasets}
    )
    res = result_keys(runs)
    res["meta"] = {
        "runs": runs,
        "machine": machine(),
        "protocol": "full ranking, leave-one-out by time, train and valid items masked",
    }
    print(report(res))
    if args.results:
        Path(f"{args.results}.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
        write_report(Path(f"{args.results}.md"), "# SASRec on S3-Rec's Amazon sequences\n\n" + report(res))


if __name__ == "__main__":
    main()
