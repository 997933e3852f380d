"""Image attacks on visually-aware recommenders (docs/methods.md section 3) as a transfer study: FGSM / PGD
images of target items crafted on a surrogate victim (VBPR, AMR, DeepStyle) and uploaded to every
victim behind every deployed defense (none, JPEG, bit depth, median, the ViT filter, detector, or
both); adaptive PGD (BPDA through the filters, EOT through a randomised ViT) as rows of its own.

Stages: ``encoder`` (the genre-pretrained timm image encoder) -> ``train`` (each victim) -> ``vit``
(the ViT purifier + detector, trained on posters attacked against the first victim) -> ``craft``
(surrogate x method x eps; adaptive: x defense) -> ``cell`` (row x column) and ``detection`` (the
detector's AUC per eps). Rows ``no attack``, ``<method> eps=<n>/255 @<surrogate>``; columns ``<victim>``
or ``<victim>+<defense>``. Metrics: T-HR@10/20 and the mean target rank over all users, clean Recall@20
(no-attack row), uploads rejected."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pydantic
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import load_model, save_file, save_model

from distrec.attacks.budget import BUCKETS, popularity_bucket
from distrec.attacks.item_image import GOALS, METHODS, ImageAttackConfig, ItemImageAttack, straight_through
from distrec.config import AtLeastOne, ConfigError, check, check_keys
from distrec.content_id import content_id
from distrec.data.dataset import PreparedDataset
from distrec.data.item_images import load_item_images
from distrec.data.matrix import UserItemCSR
from distrec.data.spec import DatasetSpec, check_dataset_spec, materialise_dataset
from distrec.defenses import create_defense, defense_class, list_defenses
from distrec.defenses.chain import victim_and_defense
from distrec.defenses.vit_defense import (
    VIT_DEPLOYMENTS,
    ViTDefense,
    ViTDefenseConfig,
    mann_whitney_auc,
    train_vit_defense,
)
from distrec.distributed import storage
from distrec.metrics.ranking import full_ranking_metrics
from distrec.metrics.targets import target_mean_rank, target_metrics
from distrec.models.embedding import Embedder, embed_images
from distrec.models.image_encoder import GenreEncoderConfig, pretrain_genre_encoder
from distrec.models.registry import create_victim, victim_class
from distrec.models.visual import VisualVictim
from distrec.study.columns import check_one_defense_columns
from distrec.study.engine import StageResources, Unit
from distrec.study.scenario import Scenario, register_scenario

FORBID = pydantic.ConfigDict(extra="forbid")
NO_ATTACK = "no attack"
Eps255 = Annotated[int, pydantic.Field(gt=0, le=255)]  # a numerator over 255


@pydantic.dataclasses.dataclass(config=FORBID)
class ItemImageConfig:
    """``eps``: numerators over 255; ``surrogates``: victims the images are crafted on (default the first);
    ``transfer: false`` measures each craft on its surrogate's columns only (the white-box table);
    ``defenses``: name -> config (``vit_*`` take the shared ``vit`` settings); ``adaptive_eps``: eps of the
    adaptive PGD through each defense and past the ViT detector where a column deploys it (selective PGD;
    ``null``: none); ``eot_samples``: its EOT samples through a
    randomised ViT (``vit.random_partition``)."""

    dataset: DatasetSpec
    victims: dict[str, dict]
    image_size: int = 64
    encoder: dict = field(default_factory=dict)
    surrogates: list[str] | None = None
    transfer: bool = True
    defenses: dict[str, dict] = field(default_factory=dict)
    columns: list[str] | None = None
    vit: dict = field(default_factory=dict)
    n_targets: int = 20
    target_bucket: Literal[BUCKETS] = "tail"
    methods: list[Literal[METHODS]] = field(default_factory=lambda: ["fgsm", "pgd"])
    eps: list[Eps255] = field(default_factory=lambda: [4, 8, 16])
    pgd_steps: AtLeastOne = 10
    goal: Literal[GOALS] = "promote"
    adaptive_eps: Eps255 | None = 8
    eot_samples: AtLeastOne = 4
    vit_train_items: int = 1500
    detection_items: int = 200
    seed: int = 0
    metric: Literal["t_hr@10", "t_hr@20", "mean_rank"] = "t_hr@10"
    resources: dict[str, StageResources] = field(default_factory=dict)


def local_copy(uri: str) -> str:
    """A local folder with the contents of ``uri`` (itself when it is local), one download per process."""
    if "://" not in uri:
        return uri
    if uri.startswith("file://"):
        return uri.removeprefix("file://")
    target = Path(tempfile.gettempdir()) / "distrec-cache" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if not (target / ".complete").exists():
        storage.download(uri, target)
        (target / ".complete").write_text("")
    return str(target)


def load_visual(folder: str, encoder: str) -> VisualVictim:
    """A saved visual victim, its encoder read from ``encoder`` (this machine's copy)."""
    from safetensors.torch import load_file

    meta = json.loads(Path(folder, "config.json").read_text())
    model = create_victim(meta["name"], meta["n_users"], meta["n_items"], **dict(meta["config"], encoder=encoder))
    model.load_state_dict(load_file(Path(folder, "model.safetensors")))
    return model.eval()


class Deployed:
    """A defense as deployed on item images: every image passes the filter; the detector rejects a
    flagged upload, so the item keeps its previous (clean) image."""

    def __init__(self, name: str, filter_: torch.nn.Module | None, detector: ViTDefense | None):
        self.name, self.filter, self.detector = name, filter_, detector

    @torch.no_grad()
    def apply(self, uploaded: torch.Tensor, previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images the recommender sees, and which uploads were rejected."""
        rejected = (
            self.detector.flag(uploaded) if self.detector is not None else torch.zeros(len(uploaded), dtype=torch.bool)
        )
        kept = torch.where(rejected[:, None, None, None], previous, uploaded)
        return (self.filter(kept) if self.filter is not None else kept), rejected

    def attack_path(self) -> torch.nn.Module | None:
        """What an adaptive attacker differentiates through (BPDA for non-differentiable filters)."""
        if self.filter is None:
            return None
        return self.filter if isinstance(self.filter, ViTDefense) else straight_through(self.filter)


@register_scenario("item_image")
class ItemImage(Scenario):
    description = "FGSM / PGD on item images against visually-aware recommenders, with filters and the ViT defense"
    paper = "Yin et al., arXiv 2306.07992"
    Config = ItemImageConfig
    stages = ("encoder", "train", "vit", "features", "craft", "cell", "detection")
    hosted = {"craft": "victim", "features": "victim", "cell": "victim"}
    extra_metrics = ("mean_rank", "recall@20", "rejected")

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        cfg, src = self.config, self.source
        check_dataset_spec(cfg.dataset, src)
        check_keys(GenreEncoderConfig, cfg.encoder, src, "encoder")
        for name, vcfg in cfg.victims.items():
            try:
                cls = victim_class(name)
            except ValueError as exc:
                raise ConfigError(f"{src}: victims.{name}: {exc}") from None
            if not issubclass(cls, VisualVictim):
                raise ConfigError(
                    f"{src}: victims.{name}: not a visually-aware victim; the item_image scenario takes amr, "
                    "deepstyle, vbpr"
                )
            if "encoder" in vcfg or "image_size" in vcfg:
                raise ConfigError(
                    f"{src}: victims.{name}: encoder and image_size are set by the study (keys encoder, image_size)"
                )
            check_keys(cls.Config, dict(vcfg, encoder="x", image_size=cfg.image_size), src, f"victims.{name}")
        for name, dcfg in cfg.defenses.items():
            if name not in list_defenses() or defense_class(name).kind != "deployment":
                deployments = [d for d in list_defenses() if defense_class(d).kind == "deployment"]
                raise ConfigError(
                    f"{src}: defenses.{name}: unknown image defense; registered: {', '.join(deployments)}"
                )
            check_keys(defense_class(name).Config, dcfg, src, f"defenses.{name}")
        if any(d in VIT_DEPLOYMENTS for d in cfg.defenses):
            check_keys(ViTDefenseConfig, cfg.vit, src, "vit")
        check_one_defense_columns(self.columns(), cfg.victims, cfg.defenses, src, self.name)
        for i, s in enumerate(self.surrogates()):
            if s not in cfg.victims:
                raise ConfigError(f"{src}: surrogates.{i}: {s!r} is not one of the victims ({', '.join(cfg.victims)})")

    def columns(self) -> list[str]:
        if self.config.columns is not None:
            return list(self.config.columns)
        return [f"{v}+{d}" if d else v for v in self.config.victims for d in ["", *self.config.defenses]]

    def surrogates(self) -> list[str]:
        return list(self.config.surrogates) if self.config.surrogates is not None else list(self.config.victims)[:1]

    def protocol(self) -> str:
        c = self.config
        return (
            f"{c.n_targets} {c.target_bucket} target items' images attacked ({c.goal}), L-inf eps n/255, "
            f"PGD {c.pgd_steps} steps; target metrics over all users; seed {c.seed}"
        )

    def baseline(self, row: str) -> str | None:
        return NO_ATTACK

    # ------------------------------------------------------------------ planning
    def plan(self, out: str) -> list[Unit]:
        cfg = self.config
        data = materialise_dataset(cfg.dataset, out)
        targets = self.targets(data)
        common = {"data": data.uri, "targets": targets}
        enc = Unit(
            "encoder", content_id(self.data_key(data), cfg.image_size, cfg.encoder), {"data": data.uri}, label="encoder"
        )
        trained = {name: content_id(enc.id, name, vcfg) for name, vcfg in cfg.victims.items()}
        units = [enc] + [
            Unit(
                "train",
                trained[name],
                {"data": data.uri, "victim": name, "config": vcfg},
                deps={"encoder": enc.id},
                label=name,
            )
            for name, vcfg in cfg.victims.items()
        ]
        vit_units = self._vit_units(trained, common)
        vit = vit_units[0].id if vit_units else None
        crafts = self._craft_units(trained, vit, common)
        features = self._feature_units(trained, vit, common)
        rows = [(None, None)] + crafts
        cells = [
            self._cell_unit(craft, sur, column, trained, vit, features, common)
            for craft, sur in rows
            for column in self.columns()
        ]
        return (
            units + vit_units + [c for c, _ in crafts] + list(features.values()) + [c for c in cells if c is not None]
        )

    def _vit_units(self, trained: dict[str, str], common: dict) -> list[Unit]:
        """The ViT purifier + detector (trained on posters attacked against the first victim) and its
        detection AUC, where a column deploys it; none otherwise."""
        cfg = self.config
        if not any(victim_and_defense(c)[1] in VIT_DEPLOYMENTS for c in self.columns()):
            return []
        first = next(iter(cfg.victims))
        vit_id = content_id(
            trained[first], dataclasses.asdict(self._vit_config()), cfg.vit_train_items, common["targets"]
        )
        vit = Unit("vit", vit_id, dict(common), deps={"victim": trained[first]}, label=f"vit on {first}")
        detection = Unit(
            "detection",
            content_id(vit.id, cfg.detection_items, cfg.goal),
            dict(common),
            deps={"vit": vit.id, "victim": trained[first]},
            label="detection",
        )
        return [vit, detection]

    def _craft_units(self, trained: dict[str, str], vit: str | None, common: dict) -> list[tuple[Unit, str]]:
        """(craft, surrogate) per surrogate: every method x eps, then the adaptive PGD through each defense a
        column deploys."""
        cfg = self.config
        deployed = list(dict.fromkeys(victim_and_defense(c)[1] for c in self.columns() if "+" in c))
        crafts = []
        for sur in self.surrogates():
            attacks = [
                ({"method": m, "eps": e, "adaptive": None}, {"victim": trained[sur]}, f"{m} eps={e}/255")
                for m in cfg.methods
                for e in cfg.eps
            ]
            for d in deployed if cfg.adaptive_eps else []:
                attack = {
                    "method": "pgd_adaptive",
                    "eps": cfg.adaptive_eps,
                    "adaptive": d,
                    "defense_config": cfg.defenses[d],
                }
                if d in VIT_DEPLOYMENTS and VIT_DEPLOYMENTS[d][1]:
                    attack["evade"] = "selective"  # past the detector, too
                deps = {"victim": trained[sur], **({"vit": vit} if d in VIT_DEPLOYMENTS else {})}
                attacks.append((attack, deps, f"pgd_adaptive eps={cfg.adaptive_eps}/255"))
            for attack, deps, name in attacks:
                ident = (trained[sur], attack, cfg.pgd_steps, cfg.goal, cfg.seed, common["targets"]) + (
                    (deps.get("vit"),) if attack["adaptive"] else ()
                )
                crafts.append(
                    (
                        Unit(
                            "craft", content_id(*ident), dict(common, attack=attack), deps=deps, label=f"{name} @{sur}"
                        ),
                        sur,
                    )
                )
        return crafts

    def _feature_units(self, trained: dict[str, str], vit: str | None, common: dict) -> dict[str, Unit]:
        """Per column: the clean catalogue's features as its defense serves them."""
        features = {}
        for column in self.columns():
            victim, defense = victim_and_defense(column)
            deps = {"victim": trained[victim], **({"vit": vit} if defense in VIT_DEPLOYMENTS else {})}
            payload = dict(
                common, victim=victim, defense=defense or None, defense_config=self.config.defenses.get(defense, {})
            )
            features[column] = Unit(
                "features",
                content_id(deps, defense, payload["defense_config"]),
                payload,
                deps=deps,
                label=f"catalogue features | {column}",
            )
        return features

    def _cell_unit(
        self, craft: Unit | None, surrogate: str | None, column: str, trained, vit, features, common
    ) -> Unit | None:
        """A row x column cell (``craft`` None: the no-attack row); ``None`` where the row does not apply
        (white-box only, or an adaptive craft against another defense or none)."""
        cfg = self.config
        victim, defense = victim_and_defense(column)
        label = craft.label if craft else NO_ATTACK
        if craft is not None:
            adaptive = craft.payload["attack"]["adaptive"]
            if (
                (not cfg.transfer and victim != surrogate)
                or adaptive not in (None, defense)
                or (adaptive and not defense)
            ):
                return None
        deps = {
            "victim": trained[victim],
            "features": features[column].id,
            **({"craft": craft.id} if craft else {}),
            **({"vit": vit} if defense in VIT_DEPLOYMENTS else {}),
        }
        payload = dict(
            common,
            row=label,
            column=column,
            victim=victim,
            defense=defense or None,
            defense_config=cfg.defenses.get(defense, {}),
        )
        return Unit(
            "cell",
            content_id(deps, defense, payload["defense_config"], common["targets"]),
            payload,
            deps=deps,
            label=f"{label} | {column}",
        )

    def targets(self, data: PreparedDataset) -> list[int]:
        """``n_targets`` items with an image drawn from the popularity bucket with ``seed``."""
        cfg = self.config
        if not data.has("item_images"):
            raise ConfigError(f"{self.source}: dataset: {data.uri} has no item images (give dataset.images)")
        train = UserItemCSR.from_table(data.table("train"), data.n_users, data.n_items)
        has_image = np.zeros(data.n_items, bool)
        has_image[data.table("item_images", ["item_id"]).column("item_id").to_numpy()] = True
        bucket = popularity_bucket(train, cfg.target_bucket)
        bucket = bucket[has_image[bucket]]
        if len(bucket) < cfg.n_targets:
            raise ConfigError(
                f"{self.source}: n_targets: the {cfg.target_bucket} bucket has {len(bucket)} items with an image, "
                f"fewer than {cfg.n_targets}"
            )
        return np.sort(np.random.default_rng(cfg.seed).choice(bucket, cfg.n_targets, replace=False)).tolist()

    # ------------------------------------------------------------------ units
    def run(self, unit: Unit, deps: dict, ctx) -> dict:
        return getattr(self, f"_{unit.stage}")(unit.payload, deps, ctx)

    def _data(self, uri: str, ctx):
        data = ctx.cached(uri, lambda: PreparedDataset(uri))
        images = ctx.cached(
            f"{uri}/images@{self.config.image_size}",
            lambda: load_item_images(data, self.config.image_size, backend="memory"),
        )
        return data, images

    def _encoder(self, p: dict, deps: dict, ctx) -> dict:
        data, images = self._data(p["data"], ctx)
        cfg = GenreEncoderConfig(**self.config.encoder)

        def train():
            return pretrain_genre_encoder(images, data.item_categories(), cfg, progress=False)

        def save(model_report, folder):
            model_report[0].save(folder)
            Path(folder, "report.json").write_text(json.dumps(model_report[1], default=str))

        (_, report), restored = ctx.checkpoint(
            "encoder", train, save, lambda f: (Embedder.load(f), json.loads(Path(f, "report.json").read_text()))
        )
        return {
            "encoder_uri": f"{ctx.out}/checkpoints/{ctx.unit.id}/encoder",
            "report": {k: v for k, v in report.items() if k != "history"},
            "restored": restored,
        }

    def _victim(self, uri: str, encoder_uri: str, ctx) -> VisualVictim:
        return ctx.cached(uri, lambda: load_visual(local_copy(uri), local_copy(encoder_uri)))

    def _train(self, p: dict, deps: dict, ctx) -> dict:
        data, _ = self._data(p["data"], ctx)
        encoder = local_copy(deps["encoder"]["encoder_uri"])
        extra = (
            {"categories": len(data.metadata.get("category_names") or []) or 1}
            if p["victim"] == "deepstyle" and "categories" not in p["config"]
            else {}
        )

        def train():
            victim = create_victim(
                p["victim"],
                data.n_users,
                data.n_items,
                encoder=encoder,
                image_size=self.config.image_size,
                **extra,
                **p["config"],
            )
            victim.fit(data, progress=False)
            return victim

        _, restored = ctx.checkpoint("victim", train, lambda m, d: m.save(d), lambda d: load_visual(d, encoder))
        return {
            "victim_uri": f"{ctx.out}/checkpoints/{ctx.unit.id}/victim",
            "encoder_uri": deps["encoder"]["encoder_uri"],
            "restored": restored,
        }

    def _vit_model(self, deps: dict, ctx) -> ViTDefense:
        uri = deps["vit"]["vit_uri"]

        def load():
            defense = ViTDefense(self._vit_config())
            load_model(defense, f"{local_copy(uri)}/model.safetensors")
            return defense.eval()

        return ctx.cached(uri, load)

    def _vit_config(self) -> ViTDefenseConfig:
        return check(ViTDefenseConfig, {"img_size": self.config.image_size, **self.config.vit}, f"{self.source}: vit")

    def _vit_items(self, images, targets) -> torch.Tensor:
        pool = np.setdiff1d(np.flatnonzero(images.has_image.numpy()), targets)
        return torch.from_numpy(
            np.sort(
                np.random.default_rng(self.config.seed + 1).choice(
                    pool, min(self.config.vit_train_items, len(pool)), replace=False
                )
            )
        )

    def _vit(self, p: dict, deps: dict, ctx) -> dict:
        """The ViT purifier + detector trained on clean posters of non-target items and PGD versions of
        them crafted on the fly against the first victim (promote and demote, ``vit.train_eps``), with the
        victim's encoder as the feature loss's frozen encoder."""
        cfg = self.config
        _, images = self._data(p["data"], ctx)
        victim = self._victim(deps["victim"]["victim_uri"], deps["victim"]["encoder_uri"], ctx)

        def train():
            items = self._vit_items(images, p["targets"])
            steps, users = self._vit_config().attack_steps, torch.arange(victim.n_users)

            def adversary(x, rows, eps, goal):
                return ItemImageAttack(
                    victim, ImageAttackConfig(method="pgd", eps=eps, steps=steps, goal=goal, seed=cfg.seed)
                )(x, items[rows], users)

            defense = ViTDefense(self._vit_config())
            history = train_vit_defense(defense, images.floats(items), adversary, victim.encoder, progress=False)
            return defense.eval(), history

        def save(model_history, folder):
            save_model(model_history[0], f"{folder}/model.safetensors")
            Path(folder, "train.json").write_text(
                json.dumps({"config": dataclasses.asdict(self._vit_config()), "history": model_history[1]}, default=str)
            )

        def load(folder):
            defense = ViTDefense(self._vit_config())
            load_model(defense, f"{folder}/model.safetensors")
            return defense.eval(), json.loads(Path(folder, "train.json").read_text())["history"]

        (_, history), restored = ctx.checkpoint("vit", train, save, load)
        return {"vit_uri": f"{ctx.out}/checkpoints/{ctx.unit.id}/vit", "history": history, "restored": restored}

    def _deployed(self, name: str | None, config: dict, deps: dict, ctx) -> Deployed:
        if not name:
            return Deployed("none", None, None)
        if name in VIT_DEPLOYMENTS:
            vit = self._vit_model(deps, ctx)
            use_filter, use_detector = VIT_DEPLOYMENTS[name]
            return Deployed(name, vit if use_filter else None, vit if use_detector else None)
        return Deployed(name, create_defense(name, **config).apply(None), None)

    def _craft(self, p: dict, deps: dict, ctx) -> dict:
        cfg, a = self.config, p["attack"]
        _, images = self._data(p["data"], ctx)
        victim = self._victim(deps["victim"]["victim_uri"], deps["victim"]["encoder_uri"], ctx)
        targets = torch.tensor(p["targets"])
        path = detector = None
        if a["adaptive"]:
            dep = self._deployed(a["adaptive"], a["defense_config"], deps, ctx)
            path, detector = dep.attack_path(), dep.detector if a.get("evade") else None
            eot = cfg.eot_samples if a["adaptive"] in VIT_DEPLOYMENTS and self._vit_config().random_partition else 1
            attack_cfg = ImageAttackConfig(
                method="pgd", eps=a["eps"] / 255, steps=cfg.pgd_steps, goal=cfg.goal, seed=cfg.seed, eot_samples=eot
            )
        else:
            attack_cfg = ImageAttackConfig(
                method=a["method"], eps=a["eps"] / 255, steps=cfg.pgd_steps, goal=cfg.goal, seed=cfg.seed
            )
        clean = images.floats(targets)
        uploaded = ItemImageAttack(victim, attack_cfg, path, detector)(clean, targets, torch.arange(victim.n_users))
        with tempfile.TemporaryDirectory() as tmp:
            save_file({"uploaded": uploaded.contiguous()}, f"{tmp}/images.safetensors")
            storage.upload(tmp, ctx.folder)
        return {
            "images": f"{ctx.folder}/images.safetensors",
            "artifacts": [f"{ctx.folder}/images.safetensors"],
            "linf_255": float((uploaded - clean).abs().max() * 255),
            "attack": a,
        }

    @torch.no_grad()
    def _features(self, p: dict, deps: dict, ctx) -> dict:
        """The victim's features of every item's image as the defense deploys it (filtered, or the upload
        rejected): computed once per column, read by each of its cells."""
        _, images = self._data(p["data"], ctx)
        victim = self._victim(deps["victim"]["victim_uri"], deps["victim"]["encoder_uri"], ctx)
        dep = self._deployed(p["defense"], p["defense_config"], deps, ctx)
        every = images.floats()
        seen = torch.cat([dep.apply(every[s : s + 512], every[s : s + 512])[0] for s in range(0, len(every), 512)])
        with tempfile.TemporaryDirectory() as tmp:
            save_file({"features": embed_images(victim.encoder, seen).contiguous()}, f"{tmp}/features.safetensors")
            storage.upload(tmp, ctx.folder)
        return {"features": f"{ctx.folder}/features.safetensors", "artifacts": [f"{ctx.folder}/features.safetensors"]}

    @torch.no_grad()
    def _cell(self, p: dict, deps: dict, ctx) -> dict:
        data, images = self._data(p["data"], ctx)
        victim = self._victim(deps["victim"]["victim_uri"], deps["victim"]["encoder_uri"], ctx)
        dep = self._deployed(p["defense"], p["defense_config"], deps, ctx)
        targets = torch.tensor(p["targets"])
        train = ctx.cached(
            f"{p['data']}/train-csr", lambda: UserItemCSR.from_table(data.table("train"), data.n_users, data.n_items)
        )
        features = load_tensors(storage.read_bytes(deps["features"]["features"]))["features"]
        clean = images.floats(targets)
        uploaded = load_tensors(storage.read_bytes(deps["craft"]["images"]))["uploaded"] if "craft" in deps else clean
        seen, rejected = dep.apply(uploaded, clean)
        feats = features.clone()
        feats[targets] = embed_images(victim.encoder, seen)
        score = lambda u: victim.score_items_with(u, torch.arange(len(feats)), feats)  # noqa: E731
        users = np.arange(data.n_users)
        metrics = target_metrics(score, train, targets.tolist(), users, ks=(10, 20))
        metrics["mean_rank"] = target_mean_rank(score, train, targets.tolist(), users)
        metrics["rejected"] = float(rejected.float().mean())
        if "craft" not in deps:
            test = ctx.cached(
                f"{p['data']}/test-csr", lambda: UserItemCSR.from_table(data.table("test"), data.n_users, data.n_items)
            )
            base = lambda u: victim.score_items_with(u, torch.arange(data.n_items), features)  # noqa: E731
            metrics["recall@20"] = full_ranking_metrics(base, train, test, (20,))["recall@20"]
        config = {
            "defense": p["defense"],
            "defense_config": p["defense_config"] or None,
            "attack": deps.get("craft", {}).get("attack"),
        }
        return {
            "row": p["row"],
            "column": p["column"],
            "seed": self.config.seed,
            "config": config,
            "metrics": metrics,
            "rejected_count": int(rejected.sum()),
        }

    @torch.no_grad()
    def _detection(self, p: dict, deps: dict, ctx) -> dict:
        """Detection on ``detection_items`` images the ViT never saw in training: clean posters vs their PGD
        versions at every eps (AUC; accuracy at the calibrated threshold on the balanced set)."""
        cfg = self.config
        _, images = self._data(p["data"], ctx)
        vit = self._vit_model(deps, ctx)
        victim = self._victim(deps["victim"]["victim_uri"], deps["victim"]["encoder_uri"], ctx)
        unseen = np.setdiff1d(np.flatnonzero(images.has_image.numpy()), self._vit_items(images, p["targets"]).numpy())
        items = torch.from_numpy(
            np.sort(
                np.random.default_rng(cfg.seed + 2).choice(unseen, min(cfg.detection_items, len(unseen)), replace=False)
            )
        )
        clean = images.floats(items)
        scores_clean = vit.detection_score(clean)
        out = {}
        for e in cfg.eps:
            with torch.enable_grad():
                adv = ItemImageAttack(
                    victim,
                    ImageAttackConfig(method="pgd", eps=e / 255, steps=cfg.pgd_steps, goal=cfg.goal, seed=cfg.seed),
                )(clean, items, torch.arange(victim.n_users))
            scores_adv = vit.detection_score(adv)
            correct = (scores_adv > vit.threshold).float().sum() + (scores_clean <= vit.threshold).float().sum()
            out[f"pgd/{e}/auc"] = round(mann_whitney_auc(scores_clean, scores_adv), 4)
            out[f"pgd/{e}/accuracy"] = round(float(correct / (2 * len(clean))), 4)
        return {"detection": out}

    def summary(self, results: dict[str, dict]) -> dict:
        """The detector's AUC / accuracy per eps and the ViT's training record (losses, embedding spread and
        the validation pairs' numbers per epoch)."""
        out = {}
        for r in results.values():
            if r["stage"] == "detection":
                out["detection"] = r["detection"]
            elif r["stage"] == "vit":
                out["vit_training"] = r["history"]
        return out
