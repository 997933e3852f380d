"""Threat-model presets: the protocols of the public poisoning implementations (docs/methods.md section 2,
"Protocols of the public implementations"), so a table can be compared with the one its source printed.

A preset fills the threat-model keys a config leaves unset (targets, budget, filler), names the headline
metric and its K, and states what the data must be prepared with; where distrec cannot follow the source
exactly, ``deviations`` says so and the report carries it."""

from __future__ import annotations

from dataclasses import dataclass, field

from distrec.config import ConfigError


@dataclass(frozen=True)
class Protocol:
    """``threat``: threat-model defaults; ``metric``: the headline target metric, ``ks``: the K it and
    its family are reported at; ``data``: prepare keys the dataset must have been prepared with."""

    name: str
    source: str
    threat: dict
    metric: str
    ks: tuple[int, ...]
    data: dict = field(default_factory=dict)
    deviations: str = ""

    def describe(self) -> dict:
        return {
            "preset": self.name,
            "source": self.source,
            "metric": self.metric,
            "ks": list(self.ks),
            "data": self.data,
            "deviations": self.deviations,
        }


PROTOCOLS = {
    p.name: p
    for p in (
        Protocol(
            "distrec",
            "distrec's default (docs/methods.md section 2): 1% fake users, average-degree filler, 5 torso targets",
            {"fake_ratio": 0.01, "n_targets": 5, "target_bucket": "torso"},
            "t_hr@50",
            (10, 20, 50),
        ),
        Protocol(
            "revadv",
            "RevAdv official code (Tang, Wen, Wang, RecSys 2020): 1% fakes, 5 head targets attacked jointly, any "
            "target in the top 50",
            {"fake_ratio": 0.01, "n_targets": 5, "target_bucket": "head"},
            "hitone@50",
            (10, 20, 50),
            deviations="fake profiles keep the average real-user degree (RevAdv thresholds a continuous matrix, size "
            "not fixed); "
            "HitOne counts every real user, RevAdv only those with test items",
        ),
        Protocol(
            "gradpass",
            "GradientPassingAttack: 1% fakes, average-degree filler, 5 targets drawn uniformly, per-target recall and "
            "HitOne at 50",
            {"fake_ratio": 0.01, "n_targets": 5, "target_bucket": "any"},
            "t_hr@50",
            (10, 20, 50),
        ),
        Protocol(
            "arlib",
            "ARLib: ML-1M ratings >= 4, random 80/10/10, 1% fakes, average-degree filler, 5 unpopular targets",
            {"fake_ratio": 0.01, "n_targets": 5, "target_bucket": "tail"},
            "t_hr@50",
            (10, 20, 50),
            data={"implicit_threshold": 4, "test_ratio": 0.1, "valid_ratio": 0.1},
            deviations="training items are masked in the ranking (ARLib ranks unmasked) and the split is per user",
        ),
        Protocol(
            "rapu",
            "RAPU official (Zhang et al., KDD 2021): random 80/10/10, 1% fakes of 100 items each, 5 targets, any "
            "target in the top K",
            {"fake_ratio": 0.01, "n_filler": 100, "n_targets": 5, "target_bucket": "any"},
            "hitone@50",
            (10, 20, 50, 100),
            data={"test_ratio": 0.1, "valid_ratio": 0.1},
            deviations="the 5 targets are drawn with the threat seed (RAPU fixes 5 items per dataset)",
        ),
    )
}
DEFAULT = "distrec"


def get_protocol(name: str | None, source: str = "threat") -> Protocol:
    """The preset ``name`` (``None``: distrec's default); an unknown name is an error naming ``source``."""
    name = DEFAULT if name is None else name
    if name not in PROTOCOLS:
        raise ConfigError(f"{source}.preset: unknown preset {name!r}; presets: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def with_preset(threat: dict, source: str = "threat") -> dict:
    """``threat`` with its preset's defaults under the keys it sets itself, and ``preset`` named."""
    proto = get_protocol(threat.get("preset"), source)
    return {**proto.threat, **threat, "preset": proto.name}


def check_protocol_data(proto: Protocol, prepare: dict | None, source: str) -> None:
    """The dataset was prepared as the preset's source prepares it; otherwise a config error that says how."""
    prepare = prepare or {}
    wrong = {k: (v, prepare.get(k)) for k, v in proto.data.items() if prepare.get(k) != v}
    if wrong:
        found = ", ".join(f"{k}={got!r} (preset: {want!r})" for k, (want, got) in wrong.items())
        raise ConfigError(
            f"{source}.preset: {proto.name!r} expects data prepared with {proto.data}; this dataset has {found}. "
            "Prepare it so (distrec data prepare --implicit-threshold / --test-ratio / --valid-ratio), or drop the "
            "preset and set the threat keys"
        )
