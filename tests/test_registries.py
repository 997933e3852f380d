"""Discoverability the way timm does it: ``distrec list`` shows every registered entry with its one-line
description and paper, and every registered victim, attack and defense documents itself with an example."""

import json

import pytest

from distrec.cli import main, registry_entries

KINDS = ("victims", "attacks", "defenses", "scenarios", "formats")


@pytest.mark.parametrize("what", KINDS)
def test_every_registered_entry_has_a_description_and_a_paper(what):
    rows = registry_entries(what)
    assert rows and [r["name"] for r in rows] == sorted(r["name"] for r in rows) or what == "formats"
    missing = [r["name"] for r in rows if not r["description"] or not r["paper"]]
    assert not missing, f"{what} without a description or a paper: {missing}"


@pytest.mark.parametrize("what", ("victims", "attacks", "defenses"))
def test_every_registered_victim_attack_and_defense_has_an_example_block(what):
    from distrec.attacks.registry import ATTACKS
    from distrec.defenses.registry import DEFENSES
    from distrec.models.registry import VICTIMS

    registry = {"victims": VICTIMS, "attacks": ATTACKS, "defenses": DEFENSES}[what]
    names = [r["name"] for r in registry_entries(what)]
    lacking = [n for n in names if "Example" not in (registry.get(n).__doc__ or "")]
    assert not lacking, f"{what} whose docstring has no Example block: {lacking}"
    assert all(
        f'"{n}"' in registry.get(n).__doc__ or f"[{n}]" in registry.get(n).__doc__ or "+pore" in registry.get(n).__doc__
        for n in names
    )  # the example builds the entry it documents


def test_distrec_list_prints_names_kinds_descriptions_and_papers(capsys):
    assert main(["list", "defenses"]) == 0
    out = capsys.readouterr().out
    assert "pca" in out and "[data]" in out and "Mehta and Nejdl" in out and "[deployment]" in out
    assert main(["list", "victims", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    lightgcn = next(r for r in rows if r["name"] == "lightgcn")
    assert lightgcn["paper"] == "He et al., SIGIR 2020" and len(rows) >= 12
    assert main(["list", "scenarios"]) == 0
    out = capsys.readouterr().out
    assert all(s in out for s in ("poisoning", "item_image", "ranking", "robustness", "backdoor"))
