"""SharpAP reproduction (methods.md section 2): craft each attack of a config on a surrogate, retrain
every victim on clean and poisoned data for each seed, and write the T-HR table.

    python jobs/repro_sharpap.py --config configs/attacks/sharpap_ml1m_cpu.yaml --out runs/sharpap_ml1m \
        --results docs/results/sharpap_ml1m_cpu

Resumable: an attack whose result file in --out was made with the same attack spec is not crafted
again, and only the victims whose config (or the seeds) changed since are retrained. Submit to a Ray cluster with
``ray job submit -- python jobs/repro_sharpap.py ...`` (it runs on the driver's node).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import machine, shared_data  # noqa: E402
from distrec.attacks.protocols import get_protocol  # noqa: E402
from distrec.config import load_yaml  # noqa: E402
from distrec.workflows.attack import evaluate_attack, resolved_victim_configs, run_attack  # noqa: E402


def label(spec: dict) -> str:
    return spec["name"] + ("+sharpap" if spec.get("sharpap") is not None else "")


def prepared(cfg: dict, out: Path) -> Path:
    from distrec.data.dataset import prepare, write_prepared
    from distrec.data.preprocess import PrepareConfig
    from distrec.data.readers import read_source

    path = out / "data"
    if not (path / "metadata.json").exists():
        d = cfg["dataset"]
        raw = read_source(d["format"], shared_data() / d["root"])
        tables, meta = prepare(raw, PrepareConfig(**d["prepare"]), d["format"])
        write_prepared(tables, meta, path)
    return path


def as_json(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def stale_victims(saved: dict, configs: dict, seeds: list[int]) -> list[str]:
    """Victims of a saved evaluation that must be retrained: missing, other config, or other seeds."""
    if saved["seeds"] != seeds:
        return list(configs)
    return [v for v, c in configs.items() if as_json(saved["victims"].get(v, {}).get("config")) != as_json(c)]


def table(results: dict, victims: list[str], metric: str) -> str:
    """Rows: attacks, then no attack; cells: mean ± std over seeds and the lift over no attack (difference, ratio)."""
    scale = 1.0 if metric == "mean_rank" else 100.0
    lines = [f"| attack | {' | '.join(victims)} |", "|---" * (len(victims) + 1) + "|"]
    for name, r in results.items():
        cells = []
        for v in victims:
            e = r["victims"][v]
            lift = e["lift"][metric] if "lift" in e else {"difference": e[metric] - e["clean_" + metric], "ratio": None}
            ratio = f", {lift['ratio']:.2f}x" if lift["ratio"] else ""
            cells.append(f"{scale * e[metric]:.2f} ± {scale * e['std'][metric]:.2f} ({scale * lift['difference']:+.2f}{ratio})")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    clean = next(iter(results.values()))
    base = [f"{scale * clean['victims'][v]['clean_' + metric]:.2f}" for v in victims]
    lines.append(f"| no attack | {' | '.join(base)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs/attacks/sharpap_ml1m_cpu.yaml"))
    ap.add_argument("--out", default=str(REPO / "runs/sharpap_ml1m"))
    ap.add_argument("--results", help="write <results>.json and <results>.md here")
    args = ap.parse_args()
    cfg = load_yaml(args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepared(cfg, out)
    victims = list(cfg["victims"])
    configs = resolved_victim_configs(victims, cfg["victims"], args.config)
    results, crafting = {}, {}
    t0 = time.perf_counter()
    for spec in cfg["attacks"]:
        name = label(spec)
        result_file = out / f"{name}.json"
        config = dict(cfg["threat"], **(spec.get("config") or {}), **(spec.get("sharpap") or {}))
        config.update({f"surrogate.{k}": v for k, v in cfg["surrogate"]["config"].items()})
        craft_spec = {"attack": spec["name"], "sharpap": spec.get("sharpap") is not None, "config": config, "surrogate": cfg["surrogate"]["name"]}
        saved = json.loads(result_file.read_text()) if result_file.exists() else None
        if saved is not None and "craft_spec" not in saved:
            print(f"[repro] {result_file}: no craft_spec (written by an older job); assuming it matches {args.config}", flush=True)
            saved["craft_spec"] = craft_spec
        if saved is None or as_json(saved["craft_spec"]) != as_json(craft_spec):
            print(f"[repro] crafting {name}", flush=True)
            craft = run_attack(spec["name"], data, cfg["surrogate"]["name"], craft_spec["sharpap"], config, out / "poisoned" / name, progress=True, config_source=args.config)
            print(f"[repro] crafted {name} in {craft['craft_seconds']:.0f}s", flush=True)
            crafting[name] = {k: craft[k] for k in ("craft_seconds", "peak_rss_mb", "targets", "targets_original", "budget", "history")}
            ev, stale = None, victims
        else:
            crafting[name], ev = saved["crafting"], saved["evaluation"]
            stale = stale_victims(ev, configs, cfg["seeds"])
        if stale:
            print(f"[repro] evaluating {name} on {', '.join(stale)}", flush=True)
            fresh = evaluate_attack(out / "poisoned" / name, stale, cfg["seeds"], cfg["victims"], progress=True, config_source=args.config, cache_dir=out / "clean_victims")
            if ev is None:
                ev = fresh
            else:
                ev["victims"].update(fresh["victims"])
                ev["seconds"] = round(ev["seconds"] + fresh["seconds"], 3)
            result_file.write_text(json.dumps({"craft_spec": craft_spec, "evaluation": ev, "crafting": crafting[name]}, indent=2, default=str))
        results[name] = ev
    summary = {"config": cfg, "config_file": args.config, "machine": machine(), "wall_seconds": round(time.perf_counter() - t0, 1), "crafting": crafting, "results": results}
    md = [f"# SharpAP reproduction: {Path(args.config).name}", "", f"Machine: {machine()}.", ""]
    proto = next(iter(results.values())).get("protocol") or get_protocol(cfg["threat"].get("preset")).describe()
    k = proto["metric"].split("@")[1]
    md += [f"Protocol: preset {proto['preset']} ({proto['source']}" + (f"; differs: {proto['deviations']}" if proto["deviations"] else "") + ")", ""]
    for metric in dict.fromkeys((proto["metric"], f"t_hr@{k}", f"hitone@{k}", "t_hr@10", "mean_rank")):
        if all(metric in r["victims"][v] for r in results.values() for v in victims):
            unit = "" if metric == "mean_rank" else " (%)"
            md += [f"## {metric}{unit}, mean ± std over seeds {cfg['seeds']} (lift over no attack)", "", table(results, victims, metric), ""]
    md += ["## Clean Recall@20 with the fake users (without: the no-attack row's victims)", ""]
    md += [
        f"- {name}: " + ", ".join(f"{v} {r['victims'][v]['recall@20_with_fakes']:.4f} (without {r['victims'][v]['recall@20_without_fakes']:.4f})" for v in victims)
        for name, r in results.items()
    ]
    md += ["", "## Crafting", ""] + [f"- {name}: {c['craft_seconds']:.1f} s, peak RSS {c['peak_rss_mb']:.0f} MB" for name, c in crafting.items()]
    text = "\n".join(md) + "\n"
    print(text)
    if args.results:
        Path(args.results + ".json").write_text(json.dumps(summary, indent=2, default=str))
        Path(args.results + ".md").write_text(text)


if __name__ == "__main__":
    main()
