"""The differentiable surrogates gradient attacks can craft on, by name, with their config classes."""

from __future__ import annotations

from distrec.attacks.bpr_surrogate import BPRSurrogate, LightGCNSurrogate
from distrec.attacks.surrogates import WRMFSurrogate

SURROGATES = {"wrmf": WRMFSurrogate, "bpr": BPRSurrogate, "lightgcn": LightGCNSurrogate}


def surrogate_class(name: str) -> type:
    if name not in SURROGATES:
        raise ValueError(
            f"surrogate {name!r} is not differentiable here; differentiable surrogates: {', '.join(sorted(SURROGATES))}"
        )
    return SURROGATES[name]


def create_surrogate(name: str, train, n_fake: int, device="cpu", **config):
    """A surrogate over the real users of ``train`` plus ``n_fake`` fake users (timm-style factory)."""
    return surrogate_class(name)(train, n_fake, device, **config)
