"""The DeepCF MLP (CFNet-ml; Deng et al., AAAI 2019), the victim of RAWP-FT (docs/methods.md section 5): the
user's input is their row of the binary training matrix (n_items wide), the item's its column (n_users
wide); each goes through a linear layer to ``proj_dim`` without activation, the two are concatenated and
pass a ReLU tower (1024 -> 512 -> ... -> 16) to one sigmoid output, trained with BCE over each positive and
``num_negatives`` sampled negatives.

The inputs are binary and sparse, so a projection is the sum of the weight rows of the user's items (the
item's users), an ``embedding_bag`` over the training CSR: O(nnz x proj_dim) instead of the dense
O(n_items x proj_dim) per example. Scoring splits the first tower layer into its user and item halves,
so the projections of all items are computed once per call."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from distrec.data.dataset import PreparedDataset
from distrec.models.base import set_seed
from distrec.models.registry import register_victim
from distrec.models.trainer import PairwiseVictim, TrainConfig


@dataclass
class DeepCFConfig(TrainConfig):
    """DeepCF's CFNet-ml settings: projections of 512, tower 512-256-128-64-32-16, 4 negatives, batch 200."""

    proj_dim: int = 512
    tower: list[int] = field(default_factory=lambda: [512, 256, 128, 64, 32, 16])
    num_negatives: int = 4
    batch_size: int = 200
    lr: float = 1e-4
    epochs: int = 20
    score_chunk_items: int = 1024


class SparseRows:
    """The rows of a binary matrix as flat indices + offsets for ``embedding_bag`` (on the model's device)."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, n_rows: int, device):
        order = np.lexsort((cols, rows))
        self.indices = torch.as_tensor(cols[order], dtype=torch.long, device=device)
        self.starts = torch.as_tensor(np.searchsorted(rows[order], np.arange(n_rows)), dtype=torch.long, device=device)
        self.ends = torch.as_tensor(
            np.searchsorted(rows[order], np.arange(n_rows), side="right"), dtype=torch.long, device=device
        )

    def bag(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(flat column ids, offsets) of rows ``ids``, in order."""
        lengths = self.ends[ids] - self.starts[ids]
        offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)[:-1]])
        flat = torch.repeat_interleave(self.starts[ids] - offsets, lengths) + torch.arange(
            int(lengths.sum()), device=ids.device
        )
        return self.indices[flat], offsets


@register_victim("deepcf")
class DeepCF(PairwiseVictim):
    """y_ui = sigmoid(w^T tower([W_u r_u + b_u ; W_i r^i + b_i])) with r_u the user's row and r^i the item's
    column of the binary training matrix (DeepCF eq. 1-3, the representation-learning part CFNet-rl); loss
    = BCE over positives and sampled negatives (DeepCF eq. 9). Its nine weight matrices are
    :meth:`weight_matrices` (the unit of RAWP's perturbation and of its robustness score).

    Example::

        model = create_victim("deepcf", data.n_users, data.n_items, epochs=20, lr=0.0001)
        model.fit(data)
    """

    description = "DeepCF's MLP tower (CFNet-ml): a user's row and an item's column matched by an MLP"
    paper = "Deng et al., AAAI 2019"

    Config = DeepCFConfig

    def __init__(self, n_users: int, n_items: int, **config):
        super().__init__(n_users, n_items, **config)
        c = self.config
        set_seed(c.seed)
        # the projections are stored input-major ([inputs, proj_dim]) for embedding_bag
        self.user_proj = torch.nn.Parameter(torch.empty(n_items, c.proj_dim).uniform_(-(n_items**-0.5), n_items**-0.5))
        self.item_proj = torch.nn.Parameter(torch.empty(n_users, c.proj_dim).uniform_(-(n_users**-0.5), n_users**-0.5))
        self.user_bias = torch.nn.Parameter(torch.zeros(c.proj_dim))
        self.item_bias = torch.nn.Parameter(torch.zeros(c.proj_dim))
        dims = [2 * c.proj_dim, *c.tower]
        self.tower = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = torch.nn.Linear(dims[-1], 1)
        self.user_rows: SparseRows | None = None
        self.item_rows: SparseRows | None = None

    def weight_matrices(self) -> list[tuple[str, torch.nn.Parameter, int]]:
        """(name, weight, axis of a row's inputs): a row is one output unit's weights, as in ``nn.Linear``."""
        layers = [("user_proj", self.user_proj, 0), ("item_proj", self.item_proj, 0)]
        layers += [(f"tower.{i}", layer.weight, 1) for i, layer in enumerate(self.tower)]
        return layers + [("out", self.out.weight, 1)]

    def hidden_layers(self) -> list[torch.nn.Module]:
        """The tower layers called in the forward pass (RAT perturbs their outputs; the first layer is
        computed as its user and item halves, so it is not among them)."""
        return list(self.tower[1:])

    def attach(self, dataset: PreparedDataset) -> DeepCF:
        train = dataset.table("train")
        users, items = train.column("user_id").to_numpy(), train.column("item_id").to_numpy()
        device = self.user_proj.device
        self.user_rows = SparseRows(users, items, self.n_users, device)
        self.item_rows = SparseRows(items, users, self.n_items, device)
        return self

    def prepare_fit(self, dataset: PreparedDataset, device: torch.device) -> None:
        self.attach(dataset)

    def _project(self, rows: SparseRows, ids: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if rows is None:
            raise RuntimeError(f"{self.name} has no input rows: call fit() or attach(dataset) first")
        flat, offsets = rows.bag(ids)
        return F.embedding_bag(flat, weight, offsets, mode="sum") + bias

    def users(self, users: torch.Tensor) -> torch.Tensor:
        return self._project(self.user_rows, users, self.user_proj, self.user_bias)

    def items(self, items: torch.Tensor) -> torch.Tensor:
        return self._project(self.item_rows, items, self.item_proj, self.item_bias)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The tower after its first layer's pre-activation: logits."""
        h = F.relu(hidden)
        for layer in self.tower[1:]:
            h = F.relu(layer(h))
        return self.out(h).squeeze(-1)

    def user_half(self, users: torch.Tensor) -> torch.Tensor:
        """The first tower layer's contribution of the users' half of the concatenation (with its bias)."""
        first = self.tower[0]
        return self.users(users) @ first.weight[:, : self.config.proj_dim].T + first.bias

    def item_half(self, items: torch.Tensor) -> torch.Tensor:
        return self.items(items) @ self.tower[0].weight[:, self.config.proj_dim :].T

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores of aligned ``users`` and ``items`` (same shape); each distinct user and item
        is projected once."""
        uniq_u, inv_u = torch.unique(users.reshape(-1), return_inverse=True)
        uniq_i, inv_i = torch.unique(items.reshape(-1), return_inverse=True)
        return self.head(self.user_half(uniq_u)[inv_u] + self.item_half(uniq_i)[inv_i]).reshape(users.shape)

    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.logits(users[:, None].expand_as(items), items)

    def score(self, users: torch.Tensor) -> torch.Tensor:
        hu = self.user_half(users)
        chunks = []
        for s in range(0, self.n_items, self.config.score_chunk_items):
            ids = torch.arange(s, min(s + self.config.score_chunk_items, self.n_items), device=users.device)
            chunks.append(self.head(hu[:, None, :] + self.item_half(ids)[None, :, :]))
        return torch.cat(chunks, 1)

    def loss(self, users, pos, neg) -> torch.Tensor:
        neg = neg.reshape(len(users), -1)
        all_users = torch.cat([users[:, None], users[:, None].expand_as(neg)], 1)
        logits = self.logits(all_users, torch.cat([pos[:, None], neg], 1))
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1
        return F.binary_cross_entropy_with_logits(logits, labels)
