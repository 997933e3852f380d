"""The interface every victim recommender implements."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from distrec.config import check
from distrec.data.matrix import UserItemCSR
from distrec.files import write_local
from distrec.metrics.ranking import masked_topk


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


class Victim(torch.nn.Module):
    """A recommender over ``n_users`` x ``n_items`` configured by the dataclass ``Config``.

    Subclasses define ``Config`` (a dataclass; its fields are the model's keyword arguments),
    ``score(users)`` and ``fit(...)``.
    """

    name: str = "victim"
    description: str = ""  # one line for ``distrec list``
    paper: str = ""
    Config: type
    fit_history: list[dict] | None = None  # the training records, when a study keeps them with the model

    def __init__(self, n_users: int, n_items: int, **config):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.config = check(self.Config, config, self.name)

    def score(self, users: torch.Tensor) -> torch.Tensor:
        """Scores ``[len(users), n_items]`` for the given internal user ids."""
        raise NotImplementedError

    def attach(self, dataset) -> Victim:
        """Give a loaded model what it scores with that is not in its weights, from ``dataset``'s training
        split (LightGCN's graph, DeepCF's input rows); nothing for most victims."""
        return self

    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, C]`` of each user's ``C`` candidate items ``items [B, C]`` (the sampled protocol);
        models that score pairs directly override this instead of scoring every item."""
        return self.score(users).gather(1, items)

    @torch.no_grad()
    def topk(self, users: torch.Tensor, k: int, exclude: UserItemCSR | None = None) -> torch.Tensor:
        """The ``k`` best items per user, excluding the user's items in ``exclude`` (e.g. training items)."""
        if exclude is None:
            return torch.topk(self.score(users), k, dim=1).indices
        return masked_topk(self.score, users.cpu().numpy(), exclude, k, users.device)

    def save(self, directory: str | Path) -> Path:
        """``model.safetensors`` + ``config.json`` (name, sizes, config), each written atomically."""
        directory = Path(directory)
        write_local(
            directory / "model.safetensors",
            safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}),
        )
        meta = {
            "name": self.name,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "config": dataclasses.asdict(self.config),
        }
        write_local(directory / "config.json", json.dumps(meta, indent=2))
        if self.fit_history is not None:
            write_local(directory / "history.json", json.dumps(self.fit_history, indent=1, default=float))
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> Victim:
        """Rebuild a saved victim (no pickle: safetensors weights and a JSON config); a file that is
        missing, unreadable or does not fit the config is a :class:`CheckpointError` naming it."""
        from distrec.models.registry import create_victim

        directory = Path(directory)
        try:
            meta = json.loads((directory / "config.json").read_text())
            model = create_victim(meta["name"], meta["n_users"], meta["n_items"], **meta["config"])
            model.load_state_dict(load_file(directory / "model.safetensors", device=str(pick_device(device))))
            if (directory / "history.json").exists():
                model.fit_history = json.loads((directory / "history.json").read_text())
        except Exception as exc:  # safetensors, JSON, torch and OS errors alike: the checkpoint is unusable
            raise CheckpointError.of(directory, exc) from exc
        return model


class CheckpointError(ValueError):
    """A saved model that cannot be loaded (missing, truncated, forged or for another config)."""

    @classmethod
    def of(cls, directory, exc: Exception) -> CheckpointError:
        detail = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
        error = cls(f"{directory}: not a readable distrec checkpoint ({detail})")
        error.reason = f"not a readable checkpoint ({detail})"  # without the folder, for who names it
        return error


def set_seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    return torch.Generator().manual_seed(seed)
