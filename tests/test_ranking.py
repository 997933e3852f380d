"""Adversarial ranking (AdvRank): objectives, trial selection, ranking PGD, EST, metric learning."""

import pytest
import torch
import torch.nn.functional as F
from conftest import make_digits as digits

from distrec.attacks.ranking import (
    CandidateObjective,
    EmbeddingShiftObjective,
    QueryObjective,
    RankPGD,
    advrank_schedule,
    build_objective,
    parse_attack,
    select_trials,
)
from distrec.data.labeled_images import LabeledImages, load_labeled_images
from distrec.defenses.est import EmbeddingShiftingTraining
from distrec.evaluation.retrieval import recall_at_k
from distrec.models.embedding import Embedder, create_embedder, embed_images
from distrec.models.embedding_trainer import TripletTrainingConfig, fit_embedder
from distrec.models.triplet import cross_distance, pair_distance, sample_triplets, triplet_loss


def dense_hinge(target, pool_d, direction):
    """mean_{k, x} of the hinge for targets [B, K] and pool distances [B, K or 1, N]."""
    diff = target[..., None] - pool_d
    return F.relu(diff if direction == "+" else -diff).mean((-1, -2))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("direction", ["+", "-"])
def test_closed_form_objectives_equal_the_dense_hinge_sums(metric, direction):
    torch.manual_seed(0)
    pool = F.normalize(torch.randn(200, 8, dtype=torch.float64), dim=1)
    emb = F.normalize(torch.randn(5, 8, dtype=torch.float64), dim=1).requires_grad_()
    queries, cands, keep = (
        pool[torch.randint(200, (5, 3))],
        pool[torch.randint(200, (5, 4))],
        pool[torch.randint(200, (5, 2))],
    )

    ca = CandidateObjective(queries, pool, metric, direction)
    a = pair_distance(emb[:, None], queries, metric)
    ref = dense_hinge(a, cross_distance(queries, pool, metric), direction)
    assert torch.allclose(ca(emb), ref)
    assert torch.allclose(torch.autograd.grad(ca(emb).sum(), emb)[0], torch.autograd.grad(ref.sum(), emb)[0])

    qa = QueryObjective(cands, pool, metric, direction, keep, xi=3.0)
    pd = cross_distance(emb, pool, metric)[:, None, :]
    ref = dense_hinge(pair_distance(emb[:, None], cands, metric), pd, direction) + 3.0 * dense_hinge(
        pair_distance(emb[:, None], keep, metric), pd, "+"
    )
    assert torch.allclose(qa(emb), ref)
    assert torch.allclose(torch.autograd.grad(qa(emb).sum(), emb)[0], torch.autograd.grad(ref.sum(), emb)[0])


def test_rank_percentile_counts_pool_items_ranked_above_the_target():
    pool = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    query = pool[:1][None]  # one query: (1, 0); cosine distances to the pool: 0, 1, 2, 1
    candidate = torch.tensor([[0.6, 0.8]])  # distance 0.4: only the query itself is closer
    assert CandidateObjective(query, pool, "cosine", "+").rank(candidate).item() == pytest.approx(25.0)
    qa = QueryObjective(pool[[2]][None], pool, "cosine", "+")  # candidate (-1, 0) is the farthest: 3 of 4 above
    assert qa.rank(pool[:1]).item() == pytest.approx(75.0)


def test_schedule_follows_advrank():
    assert advrank_schedule(0.0) == (0.0, 0)
    assert advrank_schedule(0.01) == (pytest.approx(1 / 255), 10)
    assert advrank_schedule(0.03) == (pytest.approx(1 / 255), 15)
    assert advrank_schedule(0.1) == (pytest.approx(0.01), 20)
    assert advrank_schedule(0.3) == (pytest.approx(0.01), 30)


def test_parse_attack_names_and_errors():
    assert parse_attack("sp-qa-").name == "SP-QA-"
    assert parse_attack("CA+") == parse_attack(" ca+ ")
    for bad in ("SP-CA+", "XA+", "CA"):
        with pytest.raises(ValueError, match="unknown ranking attack"):
            parse_attack(bad)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return create_embedder("c2f2", embed_dim=32)


def test_selection_follows_the_protocol(small_model):
    images, _ = digits(400, 3)
    pool = small_model(torch.from_numpy(images)[:, None].float() / 255).detach()
    rows = torch.arange(10)
    g = torch.Generator().manual_seed(0)
    d = cross_distance(pool[rows], pool, "cosine")
    d[rows, rows] = float("inf")
    top4 = d.topk(4, largest=False).indices  # top 1% of 400
    ca = select_trials(parse_attack("CA-"), pool, rows, 10, "cosine", g)
    assert all(set(ca.others[i].tolist()) <= set(top4[i].tolist()) for i in range(10))
    qa = select_trials(parse_attack("SP-QA-"), pool, rows, 2, "cosine", g, preserve_size=2)
    for i in range(10):
        assert len(set(qa.others[i].tolist())) == 2 and not set(qa.others[i].tolist()) & set(qa.preserve[i].tolist())
        assert set(qa.others[i].tolist()) | set(qa.preserve[i].tolist()) == set(top4[i].tolist())
    sp = select_trials(parse_attack("SP-QA+"), pool, rows, 3, "cosine", g)
    assert torch.equal(sp.preserve, d.topk(5, largest=False).indices)
    with pytest.raises(ValueError, match="exceeds the top 1%"):
        select_trials(parse_attack("QA-"), pool, rows, 5, "cosine", g)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_the_ball_lowers_the_loss_and_restores_the_model(small_model, norm):
    images, _ = digits(64, 4)
    x = torch.from_numpy(images)[:, None].float() / 255
    pool = small_model(x).detach()
    spec = parse_attack("CA+")
    trials = select_trials(spec, pool, torch.arange(16), 2, "cosine", torch.Generator().manual_seed(0))
    objective = build_objective(spec, pool, trials, "cosine")
    eps = 0.1 if norm == "linf" else 1.5
    small_model.train()
    adv = RankPGD(
        small_model,
        eps,
        alpha=eps / 4,
        steps=8,
        norm=norm,
        random_start=True,
        generator=torch.Generator().manual_seed(1),
    )(x[:16], objective)
    delta = (adv - x[:16]).flatten(1)
    bound = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert bound.max() <= eps + 1e-5 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert objective(small_model(adv)).mean() < objective(pool[:16]).mean()
        assert objective.rank(small_model(adv)).mean() < objective.rank(pool[:16]).mean()
    assert small_model.training and all(p.requires_grad for p in small_model.parameters())
    assert torch.equal(RankPGD(small_model, 0.0)(x[:4], objective), x[:4])


def test_est_examples_shift_embeddings_within_eps(small_model):
    images, _ = digits(32, 5)
    x = torch.from_numpy(images)[:, None].float() / 255
    adv = EmbeddingShiftingTraining(eps=0.1, steps=5, alpha=0.03).perturb(small_model, x)
    assert (adv - x).abs().max() <= 0.1 + 1e-6
    with torch.no_grad():
        shift = -EmbeddingShiftObjective(small_model(x), "cosine")(small_model(adv))
        noise = (x + 0.1 * torch.sign(torch.randn_like(x))).clamp(0, 1)
        assert shift.mean() > -EmbeddingShiftObjective(small_model(x), "cosine")(small_model(noise)).mean()


def test_triplets_and_loss():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    a, p, n = sample_triplets(labels, torch.Generator().manual_seed(0))
    assert torch.equal(labels[a], labels[p]) and (labels[a] != labels[n]).all() and len(a) == 6
    separated = F.normalize(torch.eye(3)[labels] + 0.01 * torch.randn(6, 3), dim=1)
    assert triplet_loss(separated, labels, "cosine", 0.2, torch.Generator().manual_seed(0)) == 0
    collapsed = F.normalize(torch.ones(6, 3), dim=1)  # every distance 0: the loss is the margin
    assert triplet_loss(collapsed, labels, "cosine", 0.2, torch.Generator().manual_seed(0)).item() == pytest.approx(0.2)


def test_recall_at_k_on_hand_made_embeddings():
    emb = torch.tensor([[0.0], [0.1], [1.0], [1.1], [5.0]])
    labels = torch.tensor([0, 0, 1, 2, 2])
    # nearest others: 1, 0, 3, 2, 3 -> same label for rows 0, 1 and 4; row 3 finds row 4 fourth, row 2 never
    assert recall_at_k(emb, labels, "euclidean", ks=(1, 3, 4), chunk=2) == {
        "recall@1": 60.0,
        "recall@3": 60.0,
        "recall@4": 80.0,
    }


def test_embedder_registry_save_load(tmp_path, small_model):
    x = torch.rand(3, 1, 28, 28)
    assert small_model(x).norm(dim=1).allclose(torch.ones(3))
    loaded = Embedder.load(small_model.save(tmp_path / "m"))
    assert torch.equal(loaded(x), small_model(x)) and loaded.config == small_model.config
    with pytest.raises(
        ValueError, match=r"^c2f2: depth: unknown key; valid keys: embed_dim, img_size, in_chans, metric"
    ):
        create_embedder("c2f2", depth=3)
    timm_net = create_embedder("timm", backbone="resnet18", in_chans=1, embed_dim=16, metric="euclidean")
    assert timm_net(torch.rand(2, 1, 32, 32)).shape == (2, 16)


def test_training_learns_a_retrieval_model(digit_dataset):
    train, test = load_labeled_images(digit_dataset, "train"), load_labeled_images(digit_dataset, "test")
    torch.manual_seed(0)
    model = create_embedder("c2f2", embed_dim=64)
    before = recall_at_k(embed_images(model, test), test.labels, "cosine")["recall@1"]
    history = fit_embedder(model, train, TripletTrainingConfig(epochs=3, batch_size=100), progress=False)
    after = recall_at_k(embed_images(model, test), test.labels, "cosine")["recall@1"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert after > 95 and after > before + 5


def test_labeled_images_errors_name_the_dataset(digit_dataset):
    with pytest.raises(Exception, match=r"no labeled image split 'valid'.*images_test"):
        load_labeled_images(digit_dataset, "valid")
    data = load_labeled_images(digit_dataset, "test")
    assert (
        isinstance(data, LabeledImages) and data.images.shape == (300, 1, 28, 28) and data.images.dtype == torch.uint8
    )
