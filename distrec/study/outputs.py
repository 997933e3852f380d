"""A study's outputs: ``results.parquet`` (one row per cell), the matrix (rows attack x surrogate,
columns victim x defense; mean ± std over seeds, with the lift over the no-attack baseline) as
Markdown and CSV, a heatmap PNG, and ``study.json`` with the paths and counts."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distrec.distributed import storage


def write_results(cells: list[dict], out: str) -> str:
    metric_names = sorted({m for c in cells for m, v in c["metrics"].items() if isinstance(v, (int, float))})
    table = pa.table(
        {
            "cell_id": [c["cell_id"] for c in cells],
            "row": [c["row"] for c in cells],
            "column": [c["column"] for c in cells],
            "seed": [c["seed"] for c in cells],
            "config": [json.dumps(c["config"], sort_keys=True, default=str) for c in cells],
            "metrics": [json.dumps(c["metrics"], sort_keys=True) for c in cells],
            **{m: pa.array([_float(c["metrics"].get(m)) for c in cells], pa.float64()) for m in metric_names},
            "unit_seconds": [c.get("unit_seconds") for c in cells],
            "restored": [bool(c.get("restored", False)) for c in cells],
            "host": [c.get("host") for c in cells],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.write_bytes(f"{out}/results.parquet", buf.getvalue())
    return f"{out}/results.parquet"


def _float(v):
    return None if v is None else float(v)


def aggregate(cells: list[dict], metric: str) -> tuple[list[str], list[str], dict]:
    """Rows and columns in first-seen order, and (row, column) -> (mean, std, n) of ``metric``."""
    rows = list(dict.fromkeys(c["row"] for c in cells))
    cols = list(dict.fromkeys(c["column"] for c in cells))
    stats = {}
    for r in rows:
        for col in cols:
            vals = [
                float(c["metrics"][metric])
                for c in cells
                if c["row"] == r and c["column"] == col and metric in c["metrics"]
            ]
            if vals:
                stats[r, col] = (float(np.mean(vals)), float(np.std(vals)), len(vals))
    return rows, cols, stats


def lift(scenario, stats: dict, row: str, col: str, baselines: dict | None = None) -> tuple[float, float] | None:
    """(difference, ratio) of the row's mean over its baseline: the baseline row's in the same column,
    or, for scenarios whose cells measure their own (``baseline_metric``), that metric's mean."""
    if (row, col) not in stats:
        return None
    if baselines:
        if (row, col) not in baselines:
            return None
        b = baselines[row, col][0]
    else:
        base = scenario.baseline(row)
        if base is None or base == row or (base, col) not in stats:
            return None
        b = stats[base, col][0]
    v = stats[row, col][0]
    return v - b, ratio(v, b)


def ratio(value: float, baseline: float) -> float:
    """``value / baseline``; at a zero baseline, infinity for a positive value and 1 for zero."""
    return value / baseline if baseline else float("inf") if value else 1.0


def write_matrix(scenario, cells: list[dict], out: str, title: str) -> dict:
    metric, scale = scenario.metric, 100.0 if scenario.percent else 1.0
    unit = " (%)" if scenario.percent else ""
    rows, cols, stats = aggregate(cells, metric)
    baseline_metric = getattr(scenario, "baseline_metric", None)
    baselines = aggregate(cells, baseline_metric)[2] if baseline_metric else None
    seeds = sorted({c["seed"] for c in cells})

    def fmt(r, col):
        if (r, col) not in stats:
            return "–"
        m, s, _ = stats[r, col]
        text = f"{scale * m:.2f} ± {scale * s:.2f}"
        lf = lift(scenario, stats, r, col, baselines)
        return text + (f" ({scale * lf[0]:+.2f}, {lf[1]:.2f}x)" if lf else "")

    md = [
        f"# {title}",
        "",
        f"{metric}{unit}, mean ± std over seeds {seeds}; in brackets the lift over the no-attack baseline "
        "(difference, ratio).",
        "",
    ]
    if scenario.protocol():
        md += [f"Protocol: {scenario.protocol()}", ""]
    md += _table(rows, cols, fmt)
    for extra in scenario.extra_metrics:
        r2, c2, st2 = aggregate(cells, extra)
        ranks = extra.startswith(("mean_rank", "rank"))  # ranks are not fractions
        x_scale, x_unit = (1.0, "") if ranks else (scale, unit)
        if st2:
            md += ["", f"{extra}{x_unit}, mean over seeds (difference from the baseline)", ""]
            md += _table(
                r2, c2, lambda r, col, st2=st2, x_scale=x_scale: _with_difference(scenario, st2, r, col, x_scale)
            )
    md += _paired(scenario, cells, metric, scale, unit)
    md += scenario.report(cells)
    csv = ["row,column,n_seeds,metric,mean,std,lift_difference,lift_ratio"]
    for r in rows:
        for col in cols:
            if (r, col) in stats:
                m, s, n = stats[r, col]
                lf = lift(scenario, stats, r, col, baselines)
                csv.append(
                    ",".join(
                        [
                            _csv(r),
                            _csv(col),
                            str(n),
                            metric,
                            f"{m:.6g}",
                            f"{s:.6g}",
                            f"{lf[0]:.6g}" if lf else "",
                            f"{lf[1]:.6g}" if lf else "",
                        ]
                    )
                )
    storage.write_text(f"{out}/matrix.md", "\n".join(md) + "\n")
    storage.write_text(f"{out}/matrix.csv", "\n".join(csv) + "\n")
    _heatmap(stats, rows, cols, f"{metric}{unit}", scale, f"{out}/heatmap.png")
    return {
        "matrix_md": f"{out}/matrix.md",
        "matrix_csv": f"{out}/matrix.csv",
        "heatmap_png": f"{out}/heatmap.png",
        "matrix": "\n".join(md),
    }


def _paired(scenario, cells: list[dict], metric: str, scale: float, unit: str) -> list[str]:
    """The scenario's (row, reference) pairs compared seed by seed in each column: the mean over the seeds
    both have of row minus reference, in ``metric`` and in the mean target rank, and on how many of those
    seeds the row is the stronger attack by ``metric``."""
    by = {(c["row"], c["column"], c["seed"]): c["metrics"] for c in cells}
    cols = list(dict.fromkeys(c["column"] for c in cells))
    sign = 1.0 if scenario.higher_is_stronger else -1.0

    def fmt(pair, col):
        row, ref = pair
        seeds = sorted(
            s
            for r, c, s in by
            if r == row and c == col and (ref, col, s) in by and metric in by[row, col, s] and metric in by[ref, col, s]
        )
        if not seeds:
            return "–"
        diff = [by[row, col, s][metric] - by[ref, col, s][metric] for s in seeds]
        text = f"{scale * float(np.mean(diff)):+.2f} ({sum(sign * d > 0 for d in diff)}/{len(seeds)})"
        if all("mean_rank" in by[row, col, s] and "mean_rank" in by[ref, col, s] for s in seeds):
            rank = float(np.mean([by[row, col, s]["mean_rank"] - by[ref, col, s]["mean_rank"] for s in seeds]))
            text += f", rank {rank:+.0f}"
        return text

    pairs = [p for p in scenario.pairs() if any(fmt(p, col) != "–" for col in cols)]
    if not pairs:
        return []
    md = [
        "",
        f"Paired by seed, row minus reference: {metric}{unit} (on how many seeds the row is stronger), "
        "mean target rank",
        "",
    ]
    labelled = {f"{r} vs {ref}": (r, ref) for r, ref in pairs}
    return md + _table(list(labelled), cols, lambda label, col: fmt(labelled[label], col))


def _with_difference(scenario, stats: dict, row: str, col: str, scale: float) -> str:
    if (row, col) not in stats:
        return "–"
    lf = lift(scenario, stats, row, col)
    return f"{scale * stats[row, col][0]:.2f}" + (f" ({scale * lf[0]:+.2f})" if lf else "")


def _csv(text: str) -> str:
    return f'"{text}"' if "," in text else text


def _table(rows, cols, fmt) -> list[str]:
    lines = ["| attack \\ victim | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    return lines + [f"| {r} | " + " | ".join(fmt(r, col) for col in cols) + " |" for r in rows]


def _heatmap(stats: dict, rows: list[str], cols: list[str], label: str, scale: float, uri: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.array([[scale * stats[r, c][0] if (r, c) in stats else np.nan for c in cols] for r in rows])
    fig, ax = plt.subplots(figsize=(1.8 + 1.3 * len(cols), 1.0 + 0.45 * len(rows)))
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    top = np.nanmax(grid) if np.isfinite(grid).any() else 0
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(grid[i, j]):
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.2f}",
                    ha="center",
                    va="center",
                    color="w" if grid[i, j] < top * 0.6 else "k",
                    fontsize=8,
                )
    fig.colorbar(im, ax=ax, label=label)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    storage.write_bytes(uri, buf.getvalue())
