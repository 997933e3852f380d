"""The wall-time projection replays the engine's scheduling: hand-computed makespans on small DAGs."""

import pytest

from distrec.study.engine import StageResources, Unit
from distrec.study.projection import project


def unit(uid, stage="cell", **deps):
    return Unit(stage, uid, {}, deps=deps, label=uid)


ONE = {"cell": StageResources(1), "train": StageResources(1), "wide": StageResources(2)}


def test_a_chain_runs_end_to_end_and_independent_units_fill_the_nodes():
    chain = [unit("a"), unit("b", x="a")]
    p = project(chain, {"a": 2, "b": 3}, ONE, [StageResources(4)])
    assert (p.wall_s, p.critical_path_s, p.busy_s) == (5, 5, 5)
    three = [unit(f"u{i}") for i in range(3)]
    secs = {u.id: 3.0 for u in three}
    assert project(three, secs, ONE, [StageResources(1), StageResources(1)]).wall_s == 6
    assert project(three, secs, ONE, [StageResources(3)]).wall_s == 3
    assert project(three, secs, ONE, [StageResources(1)] * 3, overhead_s=0.5).wall_s == 3.5


def test_a_study_shaped_dag_on_two_one_cpu_nodes():
    # train t (4 s) -> crafts c1 (2 s), c2 (1 s) -> cells: c1 x2 (1 s each), c2 x2 (1 s each)
    units = [unit("t", "train"), unit("c1", m="t"), unit("c2", m="t")]
    units += [unit(f"{c}-{i}", c=c) for c in ("c1", "c2") for i in range(2)]
    secs = {"t": 4, "c1": 2, "c2": 1, "c1-0": 1, "c1-1": 1, "c2-0": 1, "c2-1": 1}
    p = project(units, secs, ONE, [StageResources(1), StageResources(1)])
    # 0-4 t | 4-6 c1 on n0, 4-5 c2 on n1 | 5-6 c2-0 on n1 | 6-7 c1-0, c1-1 | 7-8 c2-1 (plan order: c1's cells first)
    assert p.wall_s == 8 and p.critical_path_s == 7 and p.busy_s == 11
    assert p.utilisation(2) == pytest.approx(11 / 16)


def test_a_unit_no_node_can_hold_is_an_error():
    with pytest.raises(ValueError, match="needs .*num_cpus=2.*more than any node has"):
        project([unit("w", "wide")], {"w": 1}, ONE, [StageResources(1)] * 4)
