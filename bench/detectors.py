"""Each detector's time to screen a real dataset with 1% random fake users: learning from the clean
reference, scoring it for the threshold, and scoring the poisoned data (docs/methods.md section 2b). Spectral's
time includes its three victim fits (reference and poisoned data; here WRMF, 10 iterations).

    .venv/bin/python bench/detectors.py --dataset gowalla --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import pyarrow as pa
from common import cpu_model, shared_data

from distrec.data.dataset import InMemoryDataset
from distrec.data.schema import interactions_table
from distrec.data.spec import DatasetSpec, materialise_dataset
from distrec.defenses import create_defense
from distrec.defenses.planted import planted_profiles
from distrec.defenses.screening import training_matrix
from distrec.metrics.detection import detection_metrics
from distrec.models.registry import create_victim

SPECS = {
    "gowalla": {"format": "lightgcn", "root": "lightgcn/gowalla", "prepare": {"split": "given"}},
    "ml-1m": {"format": "ml-1m", "root": "ml-1m", "prepare": {"split": "ratio", "test_ratio": 0.2, "seed": 0}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(SPECS), default="gowalla")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/runs/detectors")
    args = ap.parse_args()
    spec = dict(SPECS[args.dataset])
    spec["root"] = str(shared_data() / spec["root"])
    clean = InMemoryDataset.load(materialise_dataset(DatasetSpec(**spec), args.out))
    fakes = planted_profiles(training_matrix(clean), ["random"], [0.01], 5, seed=12345)
    users = np.repeat(np.arange(fakes.n_users), fakes.degrees()) + clean.n_users
    tables = {n: clean.table(n) for n in clean.metadata["tables"]}
    tables["train"] = pa.concat_tables(
        [tables["train"], interactions_table(users, fakes.indices, is_fake=np.ones(len(users), bool))]
    )
    data = InMemoryDataset(
        tables, dict({k: v for k, v in clean.metadata.items() if k != "tables"}, n_users=clean.n_users + fakes.n_users)
    )
    is_fake = np.r_[np.zeros(clean.n_users, bool), np.ones(fakes.n_users, bool)]

    def fit(d):
        model = create_victim("wrmf", d.n_users, d.n_items, factors=64, iterations=10)
        model.fit(d, progress=False)
        return model

    rows = []
    for name in ("pca", "profile_classifier", "fap", "spectral"):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            screening = create_defense(name, fpr=0.05).screen(data, clean, fit, 0)
            times.append(time.perf_counter() - t0)
        m = detection_metrics(screening.scores, screening.removed, is_fake)
        rows.append(
            {
                "detector": name,
                "median_s": round(statistics.median(times), 2),
                "runs": [round(t, 2) for t in times],
                **{k: m[k] for k in ("auc", "recall", "real_removed_share")},
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(
        json.dumps(
            {
                "dataset": args.dataset,
                "users": data.n_users,
                "items": data.n_items,
                "fake": int(is_fake.sum()),
                "cpu": cpu_model(),
            }
        )
    )


if __name__ == "__main__":
    main()
