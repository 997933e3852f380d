"""The ``distrec`` command line: ``data prepare|info|synthetic|download``, ``train``, ``attack``,
``evaluate-attack``, ``study``, ``sweep``, ``rank train|attack|grid``, ``vars encoder|run`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import yaml

from distrec.config import ConfigError, check
from distrec.data.errors import DataFormatError, DownloadError
from distrec.files import check_writable, write_local

# failures of the input, the storage or the environment: one line naming the file, no traceback
USER_ERRORS = (ConfigError, DataFormatError, DownloadError, ValueError, OSError, KeyError, RuntimeError)


def parse_assignments(pairs: list[str], flag: str = "--set") -> dict:
    """``KEY=VALUE`` pairs to a dict; values are parsed as YAML scalars (``3`` -> int, ``true`` -> bool)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {pair!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def emit(result: dict, as_json: bool, human: str) -> None:
    print(json.dumps(result, indent=2, default=str) if as_json else human)


def _log(msg: str) -> None:
    print(f"[distrec] {msg}", file=sys.stderr, flush=True)


def cmd_data_prepare(args) -> int:
    from distrec.data.dataset import prepare, write_prepared
    from distrec.data.preprocess import PrepareConfig
    from distrec.data.readers import read_source
    from distrec.data.readers.images import read_image_collection

    options = parse_assignments(args.set)
    keys = ("implicit_threshold", "kcore", "split", "test_ratio", "valid_ratio", "test_negatives", "seed")
    config = check(PrepareConfig, {k: getattr(args, k) for k in keys}, "data prepare")
    t0 = time.perf_counter()
    _log(f"reading {args.format} from {args.root}")
    raw = read_source(args.format, args.root, on_bad_lines=args.on_bad_lines, **options)
    if args.images:
        _log(f"reading images from {args.images}")
        raw.item_images = read_image_collection(args.images, raw.bad_lines)
        if Path(args.images).is_file():
            raw.add_source(args.images)
    if raw.bad_lines.skipped:
        _log(f"skipped {raw.bad_lines.skipped} bad lines: {dict(raw.bad_lines.counts)}")
    _log("preprocessing")
    tables, meta = prepare(raw, config, args.format, options)
    _log(f"writing {args.out}")
    ds = write_prepared(tables, meta, args.out)
    info = ds.info()
    info["prepare_seconds"] = round(time.perf_counter() - t0, 3)
    emit(info, args.json, _format_info(info))
    return 0


def _format_info(info: dict) -> str:
    lines = [f"{info['name']} ({info['format']}) at {info['path']}"]
    if "users" in info:
        lines.append(
            f"  users {info['users']:,}  items {info['items']:,}  interactions {info['interactions']:,}  density "
            f"{info['density']:.5f}"
        )
        lines.append(
            "  splits " + ", ".join(f"{k} {v:,}" for k, v in info["splits"].items()) + f" ({info['split_method']})"
        )
    if info["images"]:
        lines.append("  images " + ", ".join(f"{k} {v:,}" for k, v in info["images"].items()))
    if info.get("item_attributes"):
        lines.append(
            f"  item attributes {info['item_attributes']['items']:,} items, {info['item_attributes']['categories']} "
            "categories"
        )
    if info.get("user_attributes"):
        lines.append(
            f"  user attributes {info['user_attributes']['users']:,} users: "
            f"{', '.join(info['user_attributes']['columns'])}"
        )
    if info.get("bad_lines", {}).get("skipped"):
        lines.append(f"  skipped bad lines {info['bad_lines']['skipped']:,}: {info['bad_lines']['by_reason']}")
    lines += [f"  note: {n}" for n in info.get("notes", [])]
    return "\n".join(lines)


def cmd_data_info(args) -> int:
    from distrec.data.dataset import PreparedDataset

    info = PreparedDataset(args.path).info()
    emit(info, args.json, _format_info(info))
    return 0


def cmd_data_synthetic(args) -> int:
    from distrec.data.dataset import prepare, write_prepared
    from distrec.data.preprocess import PrepareConfig
    from distrec.data.synthetic import make_synthetic

    options = parse_assignments(args.set)
    raw = make_synthetic(seed=args.seed, **options)
    tables, meta = prepare(
        raw,
        check(PrepareConfig, {k: getattr(args, k) for k in ("seed", "split", "test_negatives")}, "data synthetic"),
        "synthetic",
        dict(options, seed=args.seed),
    )
    info = write_prepared(tables, meta, args.out).info()
    emit(info, args.json, _format_info(info))
    return 0


def cmd_data_download(args) -> int:
    from distrec.data.download import download

    root = download(args.name, args.cache)
    emit({"dataset": args.name, "root": str(root)}, args.json, f"{args.name}: {root}")
    return 0


DEMO_STUDY = Path(__file__).resolve().parents[1] / "configs" / "study" / "demo.yaml"


def cmd_demo(args) -> int:
    """The main job: the study of ``configs/study/demo.yaml`` on the embedded synthetic dataset."""
    if not DEMO_STUDY.is_file():
        raise FileNotFoundError(f"{DEMO_STUDY}: the demo study ships with the repository; run distrec from a clone")
    args.config, args.outputs_only, args.no_victim_hosts = str(DEMO_STUDY), False, False
    return cmd_study(args)


def registry_entries(what: str) -> list[dict]:
    """``distrec list``'s rows: each registered victim, attack, defense, scenario or data format with its one-line
    description and its paper (or source)."""
    if what == "formats":
        from distrec.data.readers import FORMATS

        return [{"name": f, "description": d, "paper": p} for f, (d, p) in FORMATS.items()]
    if what == "victims":
        from distrec.models.registry import VICTIMS as registry
    elif what == "attacks":
        from distrec.attacks.registry import ATTACKS as registry
    elif what == "defenses":
        from distrec.defenses.registry import DEFENSES as registry
    else:
        from distrec.study.scenario import SCENARIOS as registry
    import distrec.attacks  # noqa: F401  (registration)
    import distrec.defenses  # noqa: F401
    import distrec.models  # noqa: F401
    import distrec.study.scenarios  # noqa: F401

    rows = []
    for name in registry.names():
        cls = registry.get(name)
        kind = getattr(cls, "kind", None) if what in ("attacks", "defenses") else None
        rows.append({"name": name, "kind": kind, "description": cls.description, "paper": cls.paper})
    return rows


def cmd_list(args) -> int:
    rows = registry_entries(args.what)
    width = max(len(r["name"]) for r in rows)
    human = "\n".join(
        f"{r['name']:<{width}}  " + (f"[{r['kind']}] " if r.get("kind") else "") + f"{r['description']} ({r['paper']})"
        for r in rows
    )
    emit(rows, args.json, human)
    return 0


def cmd_train(args) -> int:
    from distrec.workflows.train import train_victim

    config, source = _config_and_overrides(args)
    result = train_victim(
        args.victim,
        args.data,
        config,
        args.out,
        args.valid_split,
        progress=not args.json,
        config_source=source,
        eval_shards=args.eval_shards,
        num_cpus=args.num_cpus,
    )
    m = result["metrics"]
    emit(
        result,
        args.json,
        f"{args.victim}: recall@20 {m['recall@20']:.4f}  ndcg@20 {m['ndcg@20']:.4f}  fit {result['fit_seconds']:.1f}s "
        f" peak RSS {result['peak_rss_mb']:.0f} MB",
    )
    return 0


def _config_and_overrides(args) -> tuple[dict, str]:
    """``--config`` YAML (if any) updated by ``--set`` pairs, and a description of where keys came from."""
    from distrec.config import load_yaml

    config, source = {}, "--set"
    if getattr(args, "config", None):
        config, source = load_yaml(args.config), str(args.config)
    overrides = parse_assignments(args.set)
    if overrides and args.config:
        source = f"{source} and --set"
    config.update(overrides)
    return config, source


def cmd_attack(args) -> int:
    from distrec.config import load_yaml
    from distrec.tasks.craft import run_attack

    config, source = _config_and_overrides(args)
    population = load_yaml(args.population) if args.population else None
    sharpap = args.sharpap or population is not None
    result = run_attack(
        args.attack,
        args.data,
        args.surrogate,
        sharpap,
        config,
        args.out,
        progress=not args.json,
        config_source=source,
        population=population,
    )
    human = (
        f"{result['attack']}: {result['n_fake']} fake users, {result['fake_interactions']} interactions, targets "
        f"{result['targets_original']}; "
        + (
            f"{result['profiles_without_every_target']} profiles lack a target; "
            if result["profiles_without_every_target"]
            else ""
        )
        + f"{result['craft_seconds']:.1f}s, peak RSS {result['peak_rss_mb']:.0f} MB -> {args.out}"
    )
    emit(result, args.json, human)
    return 0


def cmd_evaluate_attack(args) -> int:
    from distrec.config import load_yaml
    from distrec.workflows.attack import default_store, evaluate_attack

    victim_configs = load_yaml(args.victim_config) if args.victim_config else {}
    seeds = [int(s) for s in args.seed_list.split(",")] if args.seed_list else args.seeds
    victims = [v.strip() for v in args.victims.split(",") if v.strip()]
    result = evaluate_attack(
        args.poisoned,
        victims,
        seeds,
        victim_configs,
        progress=not args.json,
        config_source=args.victim_config or "defaults",
        store=None if args.no_cache else args.cache or default_store(),
        num_cpus=args.num_cpus,
    )
    if args.out:
        write_local(args.out, json.dumps(result, indent=2))
    emit(result, args.json, _format_evaluation(result))
    return 0


def _format_evaluation(result: dict) -> str:
    """The attack table of one poisoned dataset: per victim, the headline metric of its protocol with
    and without the attack and the lift, HitOne and T-HR beside it, the mean target rank, the accuracy."""
    proto = result["protocol"]
    m, k = proto["metric"], proto["metric"].split("@")[1]
    lines = [
        f"{result['attack']} on {result['poisoned']} ({len(result['seeds'])} seeds, targets {result['targets']})",
        f"protocol {proto['preset']}: {proto['source']}"
        + (f"; differs: {proto['deviations']}" if proto["deviations"] else ""),
        f"| victim | {m} no attack | {m} attack | lift | T-HR@{k} | HitOne@{k} | mean target rank | Recall@20 clean "
        "-> with fakes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines.insert(2, f"cells: {result['cells_run']} run, {result['cells_reused']} reused from the study engine's store")
    for v, r in result["victims"].items():
        lf, ratio = r["lift"][m], r["lift"][m]["ratio"]
        lines.append(
            f"| {v} | {r[f'clean_{m}']:.4f} | {r[m]:.4f} ± {r['std'][m]:.4f} | {lf['difference']:+.4f} "
            f"({ratio:.2f}x) | "
            f"{r[f'clean_t_hr@{k}']:.4f} -> {r[f't_hr@{k}']:.4f} | {r[f'clean_hitone@{k}']:.4f} -> "
            f"{r[f'hitone@{k}']:.4f} | "
            f"{r['clean_mean_rank']:.1f} -> {r['mean_rank']:.1f} | {r['recall@20_without_fakes']:.4f} -> "
            f"{r['recall@20_with_fakes']:.4f} |"
        )
    return "\n".join(lines)


def cmd_study(args) -> int:
    from distrec.study import run_study
    from distrec.study.runner import rewrite_outputs

    if args.outputs_only:
        written = rewrite_outputs(args.config, args.out)
        emit(
            {k: v for k, v in written.items() if k != "matrix"},
            args.json,
            f"{written['matrix']}\n\nmatrix {written['matrix_md']}, {written['matrix_csv']}",
        )
        return 0
    result = run_study(
        args.config, args.out, progress=not args.json, num_cpus=args.num_cpus, victim_hosts=not args.no_victim_hosts
    )
    human = (
        f"{result['matrix']}\n\n{result['cells_run']} cells run, {result['cells_skipped']} already done; "
        + "; ".join(f"{stage}: {c['run']} run, {c['skipped']} done" for stage, c in result["stages"].items())
        + f"; {result['seconds']:.0f}s\n"
        f"results {result['results']}\nmatrix {result['matrix_md']}, {result['matrix_csv']}\nheatmap "
        f"{result['heatmap_png']}"
    )
    emit(result, args.json, human)
    return 0


def cmd_sweep(args) -> int:
    from distrec.study.sweep import run_sweep

    result = run_sweep(args.config, args.out, progress=not args.json, num_cpus=args.num_cpus)
    best = result["best"]
    human = (
        f"{len(result['trials'])} trials ({result['trials_run']} run now, {result['trials_skipped']} from earlier "
        f"runs) in {result['storage']}\n"
        f"best {best['metric']} {best['objective']:.4f}: {result['best_yaml']}"
    )
    emit(result, args.json, human)
    return 0


RANK_TRAIN_KEYS = ("model", "model_config", "training", "defense", "est", "train_limit")


def _rank_train_config(args) -> tuple[dict, str]:
    """``--config`` YAML with sections ``model_config``, ``training``, ``est`` (and ``model``, ``defense``,
    ``train_limit``), updated by ``--set SECTION.KEY=VALUE``; flags given on the command line win."""
    from distrec.config import load_yaml

    config, source = (load_yaml(args.config), str(args.config)) if args.config else ({}, "--set")
    for key, value in parse_assignments(args.set).items():
        section, dot, name = key.partition(".")
        if section not in RANK_TRAIN_KEYS:
            raise ConfigError(
                f"--set {key}: unknown key {section!r}; valid keys are {list(RANK_TRAIN_KEYS)} (sections take "
                "SECTION.KEY)"
            )
        if dot:
            config.setdefault(section, {})[name] = value
        else:
            config[section] = value
    unknown = sorted(set(config) - set(RANK_TRAIN_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; valid keys are {list(RANK_TRAIN_KEYS)}")
    for flag in ("model", "defense"):
        if getattr(args, flag) is not None:
            config[flag] = getattr(args, flag)
    return config, source


def cmd_rank_train(args) -> int:
    from distrec.tasks.rank import train_ranker

    config, source = _rank_train_config(args)
    result = train_ranker(args.data, out=args.out, progress=not args.json, source=source, **config)
    m = result["metrics"]
    emit(
        result,
        args.json,
        f"{result['model']} ({result['defense']}): recall@1 {m['recall@1']:.2f}%  recall@10 {m['recall@10']:.2f}%  "
        f"fit {result['fit_seconds']:.1f}s -> {args.out}",
    )
    return 0


def cmd_rank_attack(args) -> int:
    import torch

    from distrec.data.labeled_images import load_labeled_images
    from distrec.models.embedding import Embedder, embed_images
    from distrec.tasks.rank import attack_cell

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = Embedder.load(
        Path(args.model) / "model" if (Path(args.model) / "model").is_dir() else args.model, device=device
    )
    pool_images = load_labeled_images(args.data, args.split)
    pool = embed_images(model, pool_images, 1000)
    result = attack_cell(
        model,
        pool_images,
        pool,
        args.attack,
        args.eps,
        args.k,
        args.trials,
        args.seed,
        args.batch_size,
        args.xi,
        args.alpha,
        args.steps,
        args.norm,
        args.random_start,
        args.top_fraction,
    )
    human = (
        f"{result['attack']} eps {args.eps:g} k={args.k}: rank percentile {result['rank_before']:.2f} -> "
        f"{result['rank']:.2f} (+-{result['rank_sem']:.2f}) over {result['trials']} trials, "
        f"{result['steps']} steps of {result['alpha']:.4f}"
    )
    emit(result, args.json, human)
    return 0


def cmd_rank_grid(args) -> int:
    from distrec.study.advrank_grid import run_grid

    result = run_grid(args.config, args.out, progress=not args.json, num_cpus=args.num_cpus)
    table = Path(args.out) / f"advrank_{result['meta']['dataset']}.md"
    emit(result, args.json, f"{table.read_text()}\n-> {table}")
    return 0


def cmd_vars_encoder(args) -> int:
    from distrec.config import check_keys
    from distrec.data.dataset import PreparedDataset
    from distrec.data.item_images import load_item_images
    from distrec.models.image_encoder import GenreEncoderConfig, pretrain_genre_encoder

    config = GenreEncoderConfig(**check_keys(GenreEncoderConfig, parse_assignments(args.set), "--set"))
    data = PreparedDataset(args.data)
    categories = data.item_categories()
    if categories is None:
        raise ValueError(f"{args.data}: no item_attributes table with categories to pre-train the encoder on")
    encoder, report = pretrain_genre_encoder(
        load_item_images(data, args.image_size), categories, config, progress=not args.json
    )
    encoder.save(args.out)
    report["out"] = args.out
    write_local(Path(args.out, "report.json"), json.dumps(report, indent=2))
    emit(
        report,
        args.json,
        f"encoder -> {args.out}: genre top-1 precision {report['holdout_top1_precision']:.3f} (majority baseline "
        f"{report['majority_baseline']:.3f})",
    )
    return 0


def cmd_vars_run(args) -> int:
    from distrec.study.vars_study import run_vars

    result = run_vars(args.config, args.out, progress=not args.json, num_cpus=args.num_cpus)
    cells = {k: v for k, v in result.items() if k.endswith("/t_hr@10")}
    emit(
        result, args.json, "\n".join(f"{k}: {v:.4f}" for k, v in cells.items()) + f"\n-> {Path(args.out) / 'vars.json'}"
    )
    return 0


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_data_commands(sub) -> None:
    """Datasets: prepare, info, synthetic, download."""
    from distrec.data.preprocess import SPLIT_METHODS
    from distrec.data.readers import READERS

    data = sub.add_parser("data", help="prepare and inspect datasets").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser("prepare", help="read a source format and write a prepared dataset (Parquet + metadata)")
    p.add_argument("format", choices=sorted(READERS))
    p.add_argument("--root", required=True, help="source folder (or file, for table/sequence/images)")
    p.add_argument("--out", required=True, help="output folder or pyarrow.fs URI")
    p.add_argument("--images", help="tar or folder of item images named <item id>.<ext> to attach")
    p.add_argument("--split", choices=SPLIT_METHODS, default="auto")
    p.add_argument("--test-ratio", type=float, default=0.2)
    p.add_argument(
        "--test-negatives",
        type=int,
        default=0,
        help="sampled negatives per test user, stored with the split (NCF protocol: 99)",
    )
    p.add_argument("--valid-ratio", type=float, default=0.0)
    p.add_argument("--implicit-threshold", type=float, default=None, help="keep ratings >= this, as implicit 1s")
    p.add_argument("--kcore", type=int, default=0, help="iterative k-core filtering (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--on-bad-lines", choices=("error", "skip"), default="error")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="reader option, e.g. user_col=userId")
    _add_json(p)
    p.set_defaults(func=cmd_data_prepare)

    p = data.add_parser("info", help="counts of a prepared dataset")
    p.add_argument("path")
    _add_json(p)
    p.set_defaults(func=cmd_data_info)

    p = data.add_parser("synthetic", help="write the seeded synthetic dataset")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--test-negatives",
        type=int,
        default=0,
        help="sampled negatives per test user, stored with the split (NCF protocol: 99)",
    )
    p.add_argument("--split", choices=SPLIT_METHODS, default="auto")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="generator option, e.g. n_users=1000")
    _add_json(p)
    p.set_defaults(func=cmd_data_synthetic)

    p = data.add_parser("download", help="fetch a dataset from its official source into the cache")
    p.add_argument("name")
    p.add_argument("--cache", help="cache folder (default $DISTREC_CACHE or ~/.cache/distrec)")
    _add_json(p)
    p.set_defaults(func=cmd_data_download)


def _add_train_commands(sub) -> None:
    """One ``train VICTIM`` command per registered victim, its config keys in the epilog."""
    from distrec.config import describe
    from distrec.models import list_victims
    from distrec.models.registry import victim_class

    train = sub.add_parser("train", help="train a victim, evaluate it on the test split, save a checkpoint")
    victims = train.add_subparsers(dest="victim", required=True, metavar="VICTIM")
    for name in list_victims():
        cls = victim_class(name)
        p = victims.add_parser(
            name,
            help=(cls.__doc__ or "").strip().split("\n")[0],
            description=(cls.__doc__ or "").strip(),
            epilog=f"config keys (--config YAML or --set KEY=VALUE):\n{describe(cls.Config)}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--data", required=True, help="prepared dataset (folder or URI)")
        p.add_argument("--config", help="YAML file of config keys")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config key override")
        p.add_argument("--out", help="folder for the checkpoint and result.json")
        p.add_argument("--valid-split", help="split for early stopping (e.g. valid)")
        p.add_argument(
            "--eval-shards",
            type=int,
            default=1,
            help="score the test users in this many blocks, each a Ray task (same numbers to the last digit)",
        )
        p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray that --eval-shards starts")
        _add_json(p)
        p.set_defaults(func=cmd_train)


def _add_attack_commands(sub) -> None:
    """``attack`` (craft fake users) and ``evaluate-attack``."""
    from distrec.attacks import attack_class, list_attacks_of_kind
    from distrec.attacks.budget import ThreatModel
    from distrec.attacks.sharpap import SharpAPConfig
    from distrec.attacks.surrogate_registry import SURROGATES
    from distrec.config import describe

    p = sub.add_parser(
        "attack",
        help="craft an injective (fake-user) attack and write the poisoned dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(
            [
                "threat model keys:",
                describe(ThreatModel),
                "SharpAP keys (with --sharpap):",
                describe(SharpAPConfig),
            ]
            + [
                f"{name} surrogate keys (--surrogate {name}, as surrogate.KEY):\n{describe(cls.Config)}"
                for name, cls in SURROGATES.items()
            ]
            + [
                f"{name} keys:\n{describe(attack_class(name).Config) or '  (none)'}"
                for name in list_attacks_of_kind("injective")
            ]
        ),
    )
    p.add_argument("attack", choices=list_attacks_of_kind("injective"))
    p.add_argument("--data", required=True, help="clean prepared dataset (folder or URI)")
    p.add_argument(
        "--surrogate", default="wrmf", help="surrogate recommender of gradient attacks: wrmf (default), bpr, lightgcn"
    )
    p.add_argument("--sharpap", action="store_true", help="wrap the gradient attack in SharpAP (rho etc. via --set)")
    p.add_argument(
        "--population",
        help="YAML population config (members, combine, member_cpus): SharpAP over surrogate actors on Ray",
    )
    p.add_argument("--config", help="YAML file of config keys")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config key override")
    p.add_argument("--out", required=True, help="folder for the poisoned dataset")
    _add_json(p)
    p.set_defaults(func=cmd_attack)

    p = sub.add_parser(
        "evaluate-attack", help="retrain victims on clean and poisoned data over seeds; target metrics and accuracy"
    )
    p.add_argument("--poisoned", required=True, help="poisoned dataset written by 'distrec attack'")
    p.add_argument("--victims", default="wrmf,bpr,lightgcn,sgl,simgcl", help="comma-separated victim names")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    p.add_argument("--seed-list", help="comma-separated seeds (overrides --seeds)")
    p.add_argument("--victim-config", help="YAML mapping victim name -> config keys (the training budget)")
    p.add_argument(
        "--cache",
        help="the study engine's unit folder, shared by every evaluation: a clean victim is trained once for all "
        "attacks on the same data and targets (default $DISTREC_CACHE/evaluate_attack)",
    )
    p.add_argument("--no-cache", action="store_true", help="run every cell in a temporary folder and keep nothing")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray (ignored when joining a cluster via RAY_ADDRESS)")
    p.add_argument("--out", help="also write the JSON result to this file")
    _add_json(p)
    p.set_defaults(func=cmd_evaluate_attack)


def _add_study_commands(sub) -> None:
    """``study`` (every scenario) and ``sweep``."""
    for name, func, help_text, example, out_help in (
        (
            "study",
            cmd_study,
            "a study of any scenario (poisoning, ranking, item_image): rows attack x surrogate, columns victim x "
            "defense, on Ray",
            "configs/study/demo.yaml",
            "output folder or pyarrow.fs URI; rerunning resumes",
        ),
        (
            "sweep",
            cmd_sweep,
            "Ray Tune + Optuna (TPE) + ASHA sweep of attack hyperparameters; resumable",
            "configs/sweep/demo.yaml",
            "local folder (Optuna sqlite by default, Tune results, best.yaml)",
        ),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("config", help=f"{name} YAML (see {example})")
        p.add_argument("--out", required=True, help=out_help)
        p.add_argument(
            "--num-cpus", type=int, help="CPUs of a local Ray (ignored when joining a cluster via RAY_ADDRESS)"
        )
        if name == "study":
            p.add_argument(
                "--outputs-only",
                action="store_true",
                help="run nothing: write the matrix again from OUT/results.parquet",
            )
            p.add_argument(
                "--no-victim-hosts",
                action="store_true",
                help="run the units that attack a trained victim as tasks, not in the victim's host (same results)",
            )
        _add_json(p)
        p.set_defaults(func=func)


def _add_rank_commands(sub) -> None:
    """Adversarial ranking: ``rank train|attack|grid``."""
    rank = sub.add_parser("rank", help="adversarial ranking (AdvRank) on metric-learning retrieval").add_subparsers(
        dest="rank_command", required=True
    )
    p = rank.add_parser(
        "train",
        help="train an embedding network with the triplet loss (optionally EST), report Recall@1 on the test pool",
    )
    p.add_argument("--data", required=True, help="prepared labeled-image dataset (distrec data prepare idx ...)")
    p.add_argument("--model", help="embedder: c2f2 (default) or timm")
    p.add_argument("--defense", choices=("none", "est"), help="est: embedding-shifting adversarial training")
    p.add_argument("--config", help="YAML with model_config / training / est sections (configs/rank/)")
    p.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="e.g. training.epochs=5, est.steps=3, model_config.metric=euclidean",
    )
    p.add_argument("--out", required=True, help="folder for model/ (safetensors + JSON) and result.json")
    _add_json(p)
    p.set_defaults(func=cmd_rank_train)
    p = rank.add_parser("attack", help="one ranking attack cell: rank percentile before and after")
    p.add_argument("--model", required=True, help="folder written by 'rank train --out' (or its model/)")
    p.add_argument(
        "--data", required=True, help="prepared labeled-image dataset; the --split images are the candidate pool"
    )
    p.add_argument("--split", default="test")
    p.add_argument("--attack", required=True, help="CA+, CA-, QA+, QA-, SP-QA+, SP-QA-")
    p.add_argument("--eps", type=float, required=True, help="L-inf (or L2) budget in [0, 1] pixel units")
    p.add_argument("--k", type=int, default=1, help="w (queries, CA) or m (candidates, QA)")
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--xi", type=float, help="SP weight (default 1 for SP-QA+, 100 for SP-QA-)")
    p.add_argument("--alpha", type=float, help="step size (default AdvRank's schedule)")
    p.add_argument("--steps", type=int, help="PGD iterations (default AdvRank's schedule)")
    p.add_argument("--norm", choices=("linf", "l2"), default="linf")
    p.add_argument("--random-start", action="store_true")
    p.add_argument(
        "--top-fraction",
        type=float,
        default=0.01,
        help="neighbourhood of CA- queries and QA- candidates (AdvRank: 0.01)",
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    _add_json(p)
    p.set_defaults(func=cmd_rank_attack)
    p = rank.add_parser(
        "grid", help="the AdvRank table (attacks x eps x w/m, undefended and EST) as Ray tasks; resumable"
    )
    p.add_argument("config", help="a ranking study without transfer (see configs/rank/mnist_cpu.yaml)")
    p.add_argument("--out", required=True, help="folder for models, cells and advrank_<dataset>.json/.md")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray (ignored when joining a cluster via RAY_ADDRESS)")
    _add_json(p)
    p.set_defaults(func=cmd_rank_grid)


def _add_vars_commands(sub) -> None:
    """Visually-aware recommenders: ``vars encoder|run``."""
    vars_ = sub.add_parser(
        "vars", help="image attacks on visually-aware recommenders (VBPR, DeepStyle, AMR) and their defenses"
    ).add_subparsers(dest="vars_command", required=True)
    p = vars_.add_parser(
        "encoder", help="pre-train a timm image encoder on the items' images to predict their categories"
    )
    p.add_argument(
        "--data",
        required=True,
        help="prepared dataset with item_images and item_attributes (distrec data prepare ... --images)",
    )
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="backbone=resnet18 feature_dim=64 epochs=10 lr=0.001 batch_size=128 checkpoint=PATH",
    )
    p.add_argument("--out", required=True)
    _add_json(p)
    p.set_defaults(func=cmd_vars_encoder)
    p = vars_.add_parser("run", help="the attack x defense study: T-HR@10, target rank, clean Recall@20, detection AUC")
    p.add_argument("config", help="YAML (see configs/vars/ml1m_cpu.yaml)")
    p.add_argument(
        "--out", required=True, help="folder for the encoder, victims, ViT defense and vars.json (reused on a rerun)"
    )
    p.add_argument("--num-cpus", type=int)
    _add_json(p)
    p.set_defaults(func=cmd_vars_run)


def _add_demo_command(sub) -> None:
    """``demo``: the main job, ``make demo``'s study."""
    p = sub.add_parser(
        "demo", help="the main job: a transferability study on the embedded synthetic dataset (configs/study/demo.yaml)"
    )
    p.add_argument("--out", default="runs/study-demo", help="output folder or pyarrow.fs URI; rerunning resumes")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray (ignored when joining a cluster via RAY_ADDRESS)")
    _add_json(p)
    p.set_defaults(func=cmd_demo)


def _add_list_command(sub) -> None:
    """``list``: what is registered, the way timm's ``list_models`` shows it."""
    p = sub.add_parser("list", help="registered victims, attacks, defenses, scenarios or data formats")
    p.add_argument("what", choices=("victims", "attacks", "defenses", "scenarios", "formats"))
    _add_json(p)
    p.set_defaults(func=cmd_list)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distrec", description=__doc__)
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error instead of its one-line message"
    )
    parser.add_argument(
        "--address",
        help="the Ray cluster to join (as RAY_ADDRESS); without it and RAY_ADDRESS a command starts its own local "
        "Ray, never a cluster already running on this machine",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_data_commands,
        _add_train_commands,
        _add_attack_commands,
        _add_study_commands,
        _add_rank_commands,
        _add_vars_commands,
        _add_demo_command,
        _add_list_command,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # torch-geometric scripts some modules at import time, which newer torch reports as deprecated
    warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
    args = build_parser().parse_args(argv)
    if args.address:
        os.environ["RAY_ADDRESS"] = args.address
    if argv is None:  # the command itself, not a call from Python: its Ray goes when it goes
        from distrec.distributed.runtime import CLI_PROCESS, exit_on_sigterm

        CLI_PROCESS["active"] = True
        exit_on_sigterm()
    try:
        out = getattr(args, "out", None)
        if out and not getattr(
            args, "outputs_only", False
        ):  # before any work: a file, a read-only or unreachable store
            check_writable(str(Path(out).parent) if args.command == "evaluate-attack" else out)
        return args.func(args)
    except KeyboardInterrupt:
        print("distrec: interrupted; finished units are kept, rerun the same command to resume", file=sys.stderr)
        return 130
    except SystemExit as exc:
        if exc.code == 143:  # SIGTERM
            print("distrec: terminated; finished units are kept, rerun the same command to resume", file=sys.stderr)
        raise
    except Exception as exc:
        if args.debug or not isinstance(exc, USER_ERRORS):
            raise
        print(f"distrec: error: {one_line(exc)}", file=sys.stderr)
        return 2
    finally:
        if argv is None:
            _shutdown_ray()


def one_line(exc: BaseException) -> str:
    """An error as one line: its message's first line (pyarrow and OS errors name their file there)."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    first = text.splitlines()[0]
    return (
        first
        if isinstance(exc, (ConfigError, DataFormatError)) or len(text.splitlines()) == 1
        else f"{first} (--debug shows more)"
    )


def _shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
