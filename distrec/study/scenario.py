"""The interface a method family implements to run as a study (one module per family under
:mod:`distrec.study.scenarios`), and the scenario registry.

A scenario knows its science and nothing about scheduling:

- ``hosted``: the stages whose units attack or evaluate one trained victim, each with the dependency that
  trained it; the engine runs them in that victim's host;
- ``Config``: a pydantic dataclass of its YAML keys (unknown keys are errors); every scenario has
  ``seeds`` and ``resources`` (stage -> :class:`~distrec.study.engine.StageResources`);
- ``check()``: every problem visible before training (names, keys, ranges, paths), as
  :class:`~distrec.config.ConfigError` naming the file and key path; the engine calls it before Ray starts;
- ``plan(out)``: the study's :class:`~distrec.study.engine.Unit` s (it may prepare the dataset first;
  called before Ray starts, so a data error costs no cluster start-up);
- ``run(unit, deps, ctx)``: computes one unit on a Ray worker and returns its JSON result;
- ``cells(results)``: the matrix cells, one dict per (row, column, seed) with ``row`` (attack x
  surrogate), ``column`` (victim x defense), ``seed``, ``config`` and ``metrics``;
- ``summary(results)``: study-level results beside the matrix (``study.json``);
- ``metric``, ``percent``, ``higher_is_stronger``, ``extra_metrics``, ``protocol()``, ``baseline(row)``:
  how the engine writes the matrix (the baseline row of each row, for the lift; or ``baseline_metric``,
  a metric each cell measures before the attack).
"""

from __future__ import annotations

from distrec.content_id import content_id
from distrec.registry import Registry

SCENARIOS = Registry("scenario")
register_scenario = SCENARIOS.register


class Scenario:
    name = "scenario"
    description: str = ""  # one line for ``distrec list``
    paper: str = ""
    # raised when the scenario's science changes (what a unit computes from the same inputs), so that no
    # result computed by the old code is served as the new one's
    version = 1
    Config: type
    stages: tuple[str, ...] = ()
    # stage -> the dependency that trained the victim its units attack or evaluate: such units run in that
    # victim's host, which keeps it in memory from unit to unit (distrec.study.engine.VictimUnitHost)
    hosted: dict[str, str] = {}
    percent = True
    higher_is_stronger = True
    extra_metrics: tuple[str, ...] = ()
    baseline_metric: str | None = None

    def __init__(self, config, source: str):
        self.config, self.source = config, source

    @property
    def metric(self) -> str:
        return self.config.metric

    def data_key(self, data) -> str:
        """The root of every unit id of a study: the prepared data's content id, the scenario and its
        ``version`` (unit ids derive from it, so a new data content or a new version moves them all)."""
        return content_id(data.content_id, self.name, self.version)

    def metric_names(self) -> tuple[str, ...]:
        """Every metric a cell of this study reports (what a sweep's objective may name)."""
        return tuple(
            dict.fromkeys([self.metric, *self.extra_metrics, *([self.baseline_metric] if self.baseline_metric else [])])
        )

    def check(self) -> None:
        raise NotImplementedError

    def plan(self, out: str) -> list:
        raise NotImplementedError

    def run(self, unit, deps: dict, ctx) -> dict:
        raise NotImplementedError

    def cells(self, results: dict[str, dict]) -> list[dict]:
        """The results of the ``cell`` stage, each with its unit id as ``cell_id``."""
        return [dict(r, cell_id=uid) for uid, r in results.items() if r["stage"] == "cell"]

    def summary(self, results: dict[str, dict]) -> dict:
        """Study-level results that are not cells (e.g. detection AUC), written into ``study.json``."""
        return {}

    def protocol(self) -> str:
        return ""

    def baseline(self, row: str) -> str | None:
        """The row whose value in the same column is this row's no-attack baseline."""
        return None

    def report(self, cells: list[dict]) -> list[str]:
        """Markdown lines the matrix ends with (a scenario's own summary of its cells); none by default."""
        return []

    def pairs(self) -> list[tuple[str, str]]:
        """(row, reference row) pairs the matrix compares seed by seed in every column, e.g. an attack
        wrapped by SharpAP against the plain attack it wraps (the cells of one seed share the victim seed)."""
        return []
