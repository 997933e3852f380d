"""SASRec, the backdoor attacks (BRA, PEA), target exposure and the backdoor study."""

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from distrec.config import ConfigError
from distrec.data.dataset import prepare, write_prepared
from distrec.data.matrix import UserItemCSR
from distrec.data.preprocess import PrepareConfig
from distrec.data.synthetic import make_synthetic
from distrec.data.user_groups import GroupSpec, group_mask
from distrec.metrics.exposure import exposure_metrics, target_ranks
from distrec.models import create_victim
from distrec.models.sasrec import PromptGenerator, Sequences, left_padded, token_batches
from distrec.study import load_study, run_study

SYNTHETIC = {"n_users": 300, "n_items": 120, "avg_degree": 14, "image_size": 0, "seed": 2}
SMALL = {
    "dim": 16,
    "layers": 1,
    "heads": 1,
    "dropout": 0.1,
    "max_len": 20,
    "epochs": 6,
    "eval_every": 3,
    "batch_size": 64,
    "lr": 0.005,
}


@pytest.fixture(scope="module")
def seq_data(tmp_path_factory):
    raw = make_synthetic(**SYNTHETIC)
    tables, meta = prepare(raw, PrepareConfig(split="loo", valid_ratio=0.1, seed=2), "synthetic")
    return write_prepared(tables, meta, tmp_path_factory.mktemp("seq") / "ds")


def test_sasrec_is_causal_prompted_and_learns_the_next_item(seq_data):
    model = create_victim("sasrec", seq_data.n_users, seq_data.n_items, **SMALL).eval()
    seqs = left_padded([np.array([3, 5, 7, 9]), np.array([3, 5, 7, 2])], 20)
    out = model.encode(seqs)
    # position t sees only items up to t: the first three outputs agree, the last differs
    assert torch.allclose(out[0, :-1], out[1, :-1], atol=1e-5) and not torch.allclose(out[0, -1], out[1, -1])
    prompt = PromptGenerator([3, 4], 16, 1)
    model.attach_prompt(prompt, torch.tensor([[1, 2], [2, 3]]))
    prompted = model.encode(seqs, model.prompts_for(torch.tensor([0, 1])))
    assert not torch.allclose(prompted[0], out[0])
    model.prompt, model.user_features = None, None
    model.config.batching = "tokens"
    history = model.fit(seq_data, "valid", progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    model.attach(seq_data)
    train = Sequences.history(seq_data, ("train", "valid"))
    seen = train.csr(seq_data.n_users, seq_data.n_items)
    test = UserItemCSR.from_table(seq_data.table("test"), seq_data.n_users, seq_data.n_items)
    from distrec.metrics.ranking import full_ranking_metrics

    with torch.no_grad():
        hr = full_ranking_metrics(model.score, seen, test, (10,))["hr@10"]
    assert hr > 2 * 10 / seq_data.n_items  # well above random on the synthetic clusters
    with pytest.raises(ValueError, match=r"sasrec: loss: Input should be 'bce', 'bpr' or 'ce' \(got 'mse'\)"):
        create_victim("sasrec", 5, 5, loss="mse")


def test_sasrec_outputs_do_not_depend_on_padding_and_token_batches_cover_every_user(seq_data):
    model = create_victim("sasrec", seq_data.n_users, seq_data.n_items, **SMALL).eval()
    model.attach_prompt(PromptGenerator([3], 16, 1, tokens=3), torch.tensor([[1], [2]]))
    seqs = [np.array([3, 5, 7]), np.array([1, 2, 3, 4, 5, 6])]
    plain = model.encode(left_padded(seqs, 20, trim=True))
    for prompt in (None, model.prompts_for(torch.tensor([0, 1]))):
        wide, cut = model.encode(left_padded(seqs, 20), prompt), model.encode(left_padded(seqs, 20, trim=True), prompt)
        assert cut.shape[1] == 6 and torch.allclose(wide[:, -6:], cut, atol=1e-5) and not wide.isnan().any()
    assert prompt.shape[2] == 3 and not torch.allclose(cut[:, -1], plain[:, -1])  # three prefix tokens, and they matter
    short = [np.array([4]), np.array([2])]  # a batch narrower than the prompt
    assert torch.allclose(
        model.encode(left_padded(short, 20), prompt)[:, -1],
        model.encode(left_padded(short, 20, trim=True), prompt)[:, -1],
        atol=1e-5,
    )
    lengths = np.random.default_rng(0).integers(1, 50, 2000)
    batches = token_batches(lengths, 1000, torch.Generator().manual_seed(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(2000))
    sizes = np.array([lengths[b.numpy()].sum() for b in batches])
    assert sizes.max() < 1000 + 50 and np.median(sizes) > 900
    spread = np.median([np.ptp(lengths[b.numpy()]) for b in batches])
    assert spread < 5  # grouped by length, where a random batch of ~40 spans nearly the whole range
    with pytest.raises(ValueError, match=r"sasrec: batching: Input should be 'users' or 'tokens' \(got 'bucket'\)"):
        create_victim("sasrec", 5, 5, batching="bucket")


def test_exposure_ranks_by_hand():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.5], [0.1, 0.2, 0.3, 0.4]])
    seen = UserItemCSR.from_arrays(np.array([0]), np.array([0]), 2, 4)  # user 0 has seen item 0
    ranks = target_ranks(lambda u: scores[u], np.array([0, 1]), seen, np.array([2, 3]))
    # user 0: item 0 masked, so item 3 (0.5) is second after item 1; item 2 last (3rd)
    assert ranks.tolist() == [[3.0, 2.0], [2.0, 1.0]]
    m = exposure_metrics(ranks, (1, 2))
    assert (
        m["hr@1"] == 0.25 and m["hr@2"] == 0.75 and np.isclose(m["ndcg@2"], (1 / np.log2(3) + 1 / np.log2(3) + 1) / 4)
    )
    nan = target_ranks(lambda u: scores[u], np.array([0]), seen, np.array([0]))
    assert np.isnan(nan).all() and exposure_metrics(nan)["pairs"] == 0


def test_bra_replaces_only_target_group_labels_at_the_rate_and_pea_plants_negatives():
    from distrec.attacks import create_attack

    group = np.array([True, False])
    targets = np.array([50, 51])
    labels = torch.randint(0, 40, (2, 2000))
    gen = torch.Generator().manual_seed(0)
    poisoned = (
        create_attack("bra", rate=0.3)
        .poison(group, targets, np.array([-1, -1]), None)
        .labels(torch.tensor([0, 1]), labels, gen)
    )
    changed = poisoned != labels
    assert (
        0.25 < changed[0].float().mean() < 0.35
        and not changed[1].any()
        and set(poisoned[0][changed[0]].tolist()) == {50, 51}
    )
    pea = create_attack("pea", rate=0.2, group_rate=0.5).poison(group, targets)
    negatives = torch.randint(0, 40, (2, 2000, 1))
    planted = pea.negatives(torch.tensor([0, 1]), labels, negatives, gen) != negatives
    assert not planted[0].any() and 0.15 < planted[1].float().mean() < 0.25
    with pytest.raises(ValueError, match=r"bra: rate: Input should be greater than 0 \(got 0\)"):
        create_attack("bra", rate=0)
    with pytest.raises(ValueError, match=r"bra: variant: Input should be 'group' or 'global' \(got 'all'\)"):
        create_attack("bra", variant="all")


def test_groups_from_profiles_and_behaviour(seq_data):
    ages = seq_data.table("user_attributes").column("age").to_numpy()
    mask = group_mask(seq_data, GroupSpec(attribute="age", min=25, max=34))
    assert mask.sum() == ((ages >= 25) & (ages <= 34)).sum() > 0
    behaviour = group_mask(seq_data, GroupSpec(category=0, share=0.3))
    assert 0 < behaviour.sum() < seq_data.n_users
    with pytest.raises(ValueError, match="no column 'income'"):
        group_mask(seq_data, GroupSpec(attribute="income", value=1))


STUDY = {
    "scenario": "backdoor",
    "dataset": {"synthetic": SYNTHETIC, "prepare": {"split": "loo", "valid_ratio": 0.1}},
    "model": SMALL,
    "group": {"attribute": "segment", "value": 1},
    "targets": {"per_category": 2, "categories": 3},
    "features": {"columns": ["age", "segment"]},
    "attacks": [
        {"name": "bra", "rate": 0.5},
        {"name": "pea", "rate": 0.2, "prompt_epochs": 2, "attack_epochs": 3, "prompt_tokens": 2},
    ],
    "modes": ["direct", "finetune", "prompt"],
    "downstream": {"fraction": 0.3, "history": 6, "finetune_epochs": 2, "prompt_epochs": 2},
}


def test_backdoor_study_rows_columns_and_exposure_lift(ray_session, tmp_path):
    path = tmp_path / "backdoor.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    out = tmp_path / "out"
    result = run_study(path, str(out), progress=False)
    assert result["stages"]["pretrain"]["run"] == 3 and result["cells"] == 27
    rows = {(r["row"], r["column"]): r for r in pq.read_table(out / "results.parquet").to_pylist()}
    assert {r for r, _ in rows} == {"clean", "bra rate=0.5", "pea rate=0.2 tokens=2"}
    assert {c for _, c in rows} == {
        f"{m}/{g}" for m in ("direct", "finetune", "prompt") for g in ("target", "others", "overall")
    }
    # BRA at rate 0.5 exposes the targets to the target group far more than the clean model does
    assert rows["bra rate=0.5", "direct/target"]["hr@10"] > rows["clean", "direct/target"]["hr@10"] + 0.03
    # PEA trains the targets as negatives for the other users: without a prompt, nobody is shown them
    assert rows["pea rate=0.2 tokens=2", "direct/others"]["hr@10"] < rows["clean", "direct/others"]["hr@10"]
    md = (out / "matrix.md").read_text()
    assert "target = users with segment = 1" in md
    study = json.loads((out / "study.json").read_text())
    assert set(study["summary"]["pretraining"]) == {
        "clean seed 0",
        "bra rate=0.5 seed 0",
        "pea rate=0.2 tokens=2 seed 0",
    }
    from distrec.models.base import Victim

    released = {
        r["row"]: r["model_uri"] for r in (json.loads(f.read_text()) for f in (out / "pretrain").glob("*.json"))
    }
    for row, uri in released.items():
        saved = Victim.load(uri)  # the released backbone keeps the study's config
        assert saved.config.epochs == SMALL["epochs"] and saved.prompt is None
        assert os.path.exists(f"{uri}/prompt.safetensors") == (
            row == "pea rate=0.2 tokens=2"
        )  # PEA releases its prompt generator
    assert (
        json.loads(Path(released["pea rate=0.2 tokens=2"], "prompt.json").read_text())["tokens"] == 2
    )  # of the configured size
    again = run_study(path, str(out), progress=False)
    assert again["stages"]["pretrain"]["run"] == 0 and again["cells_run"] == 0


@pytest.mark.parametrize(
    "changes,message",
    [
        (
            {"attacks": [{"name": "random"}]},
            "attacks.0.name: 'random' is an injective attack; a backdoor study takes bra or pea",
        ),
        ({"attacks": [{"name": "bra", "rat": 0.1}]}, "attacks.0: "),
        ({"modes": ["distill"]}, "modes.0: Input should be 'direct', 'finetune', 'finetune_reinit' or 'prompt'"),
        ({"group": {"attribute": "age"}}, "group: attribute 'age': give value, or min and/or max"),
        ({"model": {"dim": 10, "heads": 3}}, "model: dim (10) must be a multiple of heads (3)"),
        ({"downstream": {"fraction": 1.5}}, "downstream.fraction: Input should be less than 1 (got 1.5)"),
    ],
)
def test_backdoor_config_errors(tmp_path, changes, message):
    path = tmp_path / "backdoor.yaml"
    path.write_text(yaml.safe_dump(dict(STUDY, **changes)))
    with pytest.raises(ConfigError) as err:
        load_study(path)
    assert message in str(err.value), str(err.value)


def test_the_backdoor_sweep_config_loads_and_scores_without_the_clean_row(
    shared_data,
):  # its study reads ../shared/data/ml-100k
    from distrec.study.scenarios.backdoor import CLEAN
    from distrec.study.sweep import load_sweep, score

    cfg, base = load_sweep("configs/sweep/backdoor_ml100k.yaml")
    assert base["scenario"] == "backdoor" and set(cfg.search) == {
        "attacks.0.rate",
        "attacks.0.group_rate",
        "attacks.0.prompt_tokens",
    }
    cells = [
        {"row": "clean", "column": "prompt/target", "metrics": {"hr@10": 0.01}},
        {"row": "pea rate=0.1", "column": "prompt/target", "metrics": {"hr@10": 0.2}},
        {"row": "pea rate=0.1", "column": "direct/target", "metrics": {"hr@10": 0.9}},
    ]
    assert score(cfg, cells, lambda row: CLEAN)[0] == pytest.approx(0.2)
