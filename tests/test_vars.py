"""Visually-aware victims, image attacks, input filters, the ViT defense and the study workflow."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from distrec.attacks.item_image import ImageAttackConfig, ItemImageAttack, straight_through
from distrec.config import ConfigError, check
from distrec.data.item_images import load_item_images
from distrec.data.matrix import UserItemCSR
from distrec.defenses.filters import BitDepthFilter, JPEGFilter, MedianFilter
from distrec.defenses.vit_defense import (
    ViTDefense,
    ViTDefenseConfig,
    _BestDetector,
    _Epochs,
    embedding_spread,
    partition,
    patchify,
    supervised_contrastive,
    train_vit_defense,
    unpatchify,
)
from distrec.metrics.targets import target_mean_rank
from distrec.models import create_victim
from distrec.models.image_encoder import GenreEncoderConfig, pretrain_genre_encoder
from distrec.study.vars_study import run_vars


@pytest.fixture(scope="module")
def encoder_dir(synthetic_dataset, tmp_path_factory):
    images = load_item_images(synthetic_dataset, 16, backend="memory")
    encoder, report = pretrain_genre_encoder(
        images,
        synthetic_dataset.item_categories(),
        GenreEncoderConfig(backbone="test_resnet", feature_dim=16, epochs=2, batch_size=64),
        progress=False,
    )
    assert report["train_items"] + report["holdout_items"] == int(images.has_image.sum())
    return encoder.save(tmp_path_factory.mktemp("encoder") / "enc")


@pytest.fixture(scope="module")
def vbpr(synthetic_dataset, encoder_dir):
    victim = create_victim(
        "vbpr",
        synthetic_dataset.n_users,
        synthetic_dataset.n_items,
        encoder=str(encoder_dir),
        image_size=16,
        epochs=4,
        lr=0.01,
        batch_size=256,
        backend="memory",
    )
    history = victim.fit(synthetic_dataset, progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    return victim.eval()


def test_item_images_ray_and_memory_agree(synthetic_dataset, ray_session):
    a = load_item_images(synthetic_dataset, 12, backend="ray")
    b = load_item_images(synthetic_dataset, 12, backend="memory")
    assert (
        torch.equal(a.pixels, b.pixels) and torch.equal(a.has_image, b.has_image) and a.pixels.shape[1:] == (3, 12, 12)
    )


def test_visual_scores_are_differentiable_in_the_pixels(vbpr, synthetic_dataset):
    users, items = torch.arange(10), torch.arange(synthetic_dataset.n_items)
    assert torch.allclose(vbpr.score(users), vbpr.score_items_with(users, items, vbpr.features))
    pixels = load_item_images(synthetic_dataset, 16, backend="memory").floats(torch.tensor([3])).requires_grad_()
    score = vbpr.score_items_with(users, torch.tensor([3]), vbpr.image_features(pixels)).mean()
    (grad,) = torch.autograd.grad(score, pixels)
    assert grad.abs().sum() > 0 and not any(p.requires_grad for p in vbpr.encoder.parameters())


def test_amr_adds_the_adversarial_term_and_deepstyle_checks_dims(synthetic_dataset, encoder_dir):
    amr = create_victim(
        "amr",
        synthetic_dataset.n_users,
        synthetic_dataset.n_items,
        encoder=str(encoder_dir),
        image_size=16,
        adv_eps=0.5,
        adv_weight=1.0,
    )
    amr.prepare_fit(synthetic_dataset, torch.device("cpu"))
    users, pos, neg = torch.arange(8), torch.arange(8), torch.arange(8, 16)
    amr.start_epoch(0)
    clean = amr.bpr_with(users, pos, neg, amr.features[pos], amr.features[neg])
    assert amr.loss(users, pos, neg) > clean * 1.5  # clean + a larger adversarial BPR
    amr.config.adv_weight = 0
    assert torch.equal(amr.loss(users, pos, neg), clean)
    with pytest.raises(ValueError, match="visual_dim .* must equal dim"):
        create_victim("deepstyle", 10, 10, encoder=str(encoder_dir), dim=8, visual_dim=4)
    with pytest.raises(ValueError, match="config key encoder"):
        create_victim("vbpr", 10, 10)


@pytest.mark.parametrize("goal", ["promote", "demote"])
@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_image_attacks_move_the_target_score_within_eps(vbpr, synthetic_dataset, goal, method):
    items, users = torch.tensor([1, 2, 3, 4]), torch.arange(synthetic_dataset.n_users)
    x = load_item_images(synthetic_dataset, 16, backend="memory").floats(items)
    adv = ItemImageAttack(vbpr, ImageAttackConfig(method=method, eps=8 / 255, steps=5, goal=goal))(x, items, users)
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        before = vbpr.score_items_with(users, items, vbpr.image_features(x)).mean(0)
        after = vbpr.score_items_with(users, items, vbpr.image_features(adv)).mean(0)
    assert ((after > before) if goal == "promote" else (after < before)).all()


class _PerturbationDetector(torch.nn.Module):
    """Flags an image whose mean |change| from ``reference`` exceeds 2/255 (a toy detector)."""

    def __init__(self, reference):
        super().__init__()
        self.reference, self.threshold = reference, torch.tensor(2.0)

    def score(self, x):
        return (x - self.reference).abs().mean((1, 2, 3)) * 255


def test_the_adaptive_attack_evades_a_detector_and_still_promotes(vbpr, synthetic_dataset):
    items, users = torch.tensor([1, 2, 3, 4]), torch.arange(synthetic_dataset.n_users)
    x = load_item_images(synthetic_dataset, 16, backend="memory").floats(items)
    detector, config = _PerturbationDetector(x), ImageAttackConfig(eps=8 / 255, steps=20)
    plain = ItemImageAttack(vbpr, config)(x, items, users)
    evading = ItemImageAttack(vbpr, config, detector=detector)(x, items, users)
    assert (detector.score(plain) > detector.threshold).all()  # the plain attack is caught
    assert (detector.score(evading) < detector.threshold).all()  # the evading one passes it
    with torch.no_grad():
        before = vbpr.score_items_with(users, items, vbpr.image_features(x)).mean(0)
        after = vbpr.score_items_with(users, items, vbpr.image_features(evading)).mean(0)
    assert (after > before).all()


def test_filters_and_bpda():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(BitDepthFilter(1)(x), (x >= 0.5).float())
    flat = torch.full((1, 3, 16, 16), 0.5)
    salted = flat.clone()
    salted[0, :, 5, 5] = 1.0
    assert torch.equal(MedianFilter(3)(salted), flat)
    smooth = torch.linspace(0, 1, 16).repeat(1, 3, 16, 1)
    assert (JPEGFilter(95)(smooth) - smooth).abs().max() < 0.05 and (JPEGFilter(5)(x) - x).abs().mean() > (
        JPEGFilter(95)(x) - x
    ).abs().mean()
    xr = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(straight_through(JPEGFilter(50))(xr).sum(), xr)
    assert torch.equal(g, torch.ones_like(x))


def test_vit_defense_pieces():
    x = torch.rand(4, 3, 16, 16)
    assert torch.equal(unpatchify(patchify(x, 4), 4, 4), x)
    visible = partition(16, 4, torch.Generator().manual_seed(0))
    assert torch.equal(visible.sum(0), torch.ones(16, dtype=torch.long)) and visible.sum(1).tolist() == [4, 4, 4, 4]
    labels = torch.tensor([0, 0, 1, 1])
    apart = F.normalize(torch.tensor([[1.0, 0], [1, 0.01], [0, 1], [0.01, 1]]), dim=1)
    mixed = apart[[0, 2, 1, 3]]
    assert supervised_contrastive(apart, labels, 0.1) < supervised_contrastive(mixed, labels, 0.1)
    assert embedding_spread(torch.ones(4, 2) / 2**0.5, labels) == pytest.approx(
        {"spread": 0.0, "separation": 0.0}, abs=1e-6
    )
    assert embedding_spread(apart, labels)["separation"] > 0.9
    for key, value, problem in [
        ("mask_ratio", 1.0, "less than 1"),
        ("pool_epochs", 0, "greater than 0"),
        ("detector_lr", 0.0, "greater than 0"),
        ("train_eps", [4, 300], "less than or equal to 255"),
    ]:
        with pytest.raises(ConfigError, match=f"^vit: {key}[.0-9]*: Input should be {problem}"):
            check(ViTDefenseConfig, {key: value}, "vit")


def test_the_purifier_never_copies_a_patch_through():
    """Each output patch comes from passes in which that patch was hidden: its own pixels have no effect on it."""
    defense = ViTDefense(img_size=16, patch_size=4, depth=1, model="test_vit", mask_ratio=0.75)
    torch.nn.init.normal_(defense.mae.head.weight, std=0.1)  # zero at initialisation: no path from input to output
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    out = defense.purify(x)
    assert out.shape == x.shape and defense.config.passes == 4
    (grad,) = torch.autograd.grad(out[:, :, 4:8, 8:12].sum(), x)  # output patch (1, 2)
    assert grad[:, :, 4:8, 8:12].abs().max() == 0 and grad.abs().sum() > 0
    assert torch.equal(defense.purify(x), out)  # a fixed, seeded partition by default
    first = ViTDefense(img_size=16, patch_size=4, depth=1, model="test_vit")
    torch.rand(7)  # whatever the process drew before, the same config builds the same weights
    again = ViTDefense(img_size=16, patch_size=4, depth=1, model="test_vit")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    randomised = ViTDefense(img_size=16, patch_size=4, depth=1, model="test_vit", random_partition=True)
    randomised.load_state_dict(defense.state_dict())
    assert not torch.equal(randomised.purify(x), randomised.purify(x))


def test_vit_defense_learns_to_detect_and_denoise():
    torch.manual_seed(0)
    smooth = lambda n: F.interpolate(torch.rand(n, 3, 2, 2), size=16, mode="bilinear", align_corners=True) * 0.5 + 0.25  # noqa: E731
    noise = lambda x, eps: (x + eps * torch.sign(torch.randn_like(x))).clamp(0, 1)  # noqa: E731
    clean = smooth(320)
    features = torch.nn.Sequential(
        torch.nn.AvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 8)
    )  # a frozen "encoder"
    defense = ViTDefense(
        img_size=16,
        patch_size=4,
        depth=1,
        detector_depth=1,
        model="test_vit",
        pretrain_epochs=8,
        epochs=6,
        detector_epochs=3,
        batch_size=32,
        lr=2e-3,
        train_eps=(40, 60),
        feature_weight=0.1,
    )
    crafted = []

    def adversary(x, rows, eps, goal):
        crafted.append(len(rows))
        return noise(x, eps)

    history = train_vit_defense(defense, clean, adversary, features, progress=False)
    pretrain, last = [h for h in history if h["phase"] == "pretrain"], history[-1]
    assert len(pretrain) == 8 and pretrain[-1]["pixel"] < pretrain[0]["pixel"]
    assert [h["phase"] for h in history[-3:]] == ["detector"] * 3 and sum(
        crafted
    ) == 32 + 6 * 288  # the detector epochs craft nothing
    for d in (defense, ViTDefense(img_size=16, patch_size=4, depth=1, model="test_vit", joint=True)):
        detector_params = {id(p) for p in d.detector_parameters()}
        assert detector_params and not detector_params & {id(p) for p in d.mae.parameters()}  # nor train the purifier
    adversarial = [h for h in history if h["phase"] == "adversarial"][-1]
    assert adversarial["spread"] > 0.1 and adversarial["separation"] > 0.5  # not collapsed
    assert last["valid_auc"] > 0.9 and last["valid_auc_classifier"] > 0.9
    assert all(p.requires_grad for p in features.parameters())  # frozen only while training
    # what the recommender's encoder sees of a purified attacked image is what it sees of the purified clean one
    assert last["valid_feature_purified_adv"] <= 1.05 * last["valid_feature_purified_clean"]
    fresh = smooth(40)
    fresh_noisy = noise(fresh, 50 / 255)
    assert defense.flag(fresh_noisy).float().mean() > 0.8 and defense.flag(fresh).float().mean() < 0.3
    with torch.no_grad():
        assert F.mse_loss(defense.purify(fresh_noisy), fresh) < 0.5 * F.mse_loss(fresh_noisy, fresh)


def test_detector_epochs_draw_from_the_last_pool_epochs_versions():
    defense = ViTDefense(
        img_size=16, patch_size=4, depth=1, detector_depth=1, model="test_vit", pool_epochs=2, batch_size=4
    )
    clean, calls = torch.zeros(6, 3, 16, 16), []

    def adversary(x, rows, eps, goal):  # version k of every image is the constant k
        calls.append(1)
        return torch.full_like(x, float(len(calls)))

    run = _Epochs(defense, clean, adversary, None, torch.arange(6), torch.Generator().manual_seed(0))
    rows = torch.arange(6)
    for _ in range(3):
        run.craft(clean, rows, 0.1, "promote")
    drawn = torch.stack([run.pooled(rows)[:, 0, 0, 0] for _ in range(20)])
    assert set(drawn.unique().tolist()) == {2.0, 3.0}  # the first version left the ring of 2


def test_the_detector_kept_is_the_best_held_out_epochs():
    defense = ViTDefense(img_size=16, patch_size=4, depth=1, detector_depth=1, model="test_vit")
    best, param = _BestDetector(defense), defense.detector_parameters()[0]
    records = [{"valid_auc_classifier": a} for a in (0.6, 0.8, 0.7)]
    snapshots = []
    for r in records:
        with torch.no_grad():
            param.add_(1.0)
        snapshots.append(param.detach().clone())
        best.offer(r)
    best.restore()
    assert torch.equal(param, snapshots[1]) and [r["selected"] for r in records] == [0, 1, 0]


def test_target_mean_rank_by_hand():
    train = UserItemCSR.from_arrays(np.array([0]), np.array([0]), 2, 4)
    scores = torch.tensor([[9.0, 1.0, 3.0, 2.0], [0.0, 1.0, 3.0, 2.0]])
    # target 3: user 0 ranks it 2nd among items 1..3 (item 0 is a training item), user 1 2nd of 4
    assert target_mean_rank(lambda u: scores[u], train, [3], np.array([0, 1])) == pytest.approx(2.0)
    # target 0 is user 0's training item: only user 1 counts, where it is last
    assert target_mean_rank(lambda u: scores[u], train, [0], np.array([0, 1])) == pytest.approx(4.0)


def test_vars_study_end_to_end(synthetic_dataset, encoder_dir, tmp_path, ray_session):
    config = {
        "scenario": "item_image",
        "transfer": False,
        "surrogates": ["vbpr"],
        "dataset": {"path": synthetic_dataset.uri},
        "image_size": 16,
        "encoder": {"backbone": "test_resnet", "feature_dim": 16, "epochs": 1, "batch_size": 64},
        "victims": {"vbpr": {"epochs": 3, "lr": 0.01, "batch_size": 256, "backend": "memory"}},
        "n_targets": 4,
        "target_bucket": "any",
        "methods": ["pgd"],
        "eps": [16],
        "pgd_steps": 4,
        "defenses": {"bit_depth": {}, "vit_filter": {}, "vit_detector": {}, "vit_filter_detector": {}},
        "vit": {
            "model": "test_vit",
            "patch_size": 4,
            "depth": 1,
            "detector_depth": 1,
            "decoder_depth": 1,
            "attack_steps": 1,
            "epochs": 2,
            "batch_size": 32,
        },
        "vit_train_items": 60,
        "detection_items": 30,
        "adaptive_eps": 16,
    }
    path = tmp_path / "vars.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_vars(path, tmp_path / "out", progress=False)
    for d in ["none", *config["defenses"]]:
        assert (
            f"vbpr/none/0/{d}/t_hr@10" in result
            and f"vbpr/pgd/16/{d}/t_hr@10" in result
            and f"vbpr/clean_recall@20/{d}" in result
        )
    assert "vbpr/pgd_adaptive/16/bit_depth/t_hr@10" in result and 0 <= result["detector/auc"] <= 1
    assert result["vbpr/pgd/16/none/mean_rank"] < result["vbpr/none/0/none/mean_rank"]
    assert json.loads((tmp_path / "out/vars.json").read_text())["meta"]["seed"] == 0
    path.write_text(yaml.safe_dump(dict(config, transfer=True)))
    with pytest.raises(ConfigError, match="vars.yaml: the image-attack table attacks each victim on its own images"):
        run_vars(path, tmp_path / "out2", progress=False)
