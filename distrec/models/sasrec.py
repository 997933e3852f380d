"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over a user's last ``max_len`` items, the
victim of the backdoor study (docs/methods.md section 6).

Item ids are shifted by one (0 pads the left of short histories); learned position embeddings; ``layers``
transformer blocks (``torch.nn.TransformerEncoderLayer``: fused scaled-dot-product attention, pre- or
post-LayerNorm, a feed-forward of width ``ffn_dim``); the last position's output is the user vector and
items are scored by the dot product with the (shared) item embeddings. Trained on every position of the
``train`` sequences: ``bce`` with ``num_negatives`` sampled items per position (the S3-Rec / SASRec
setting), ``bpr`` (the backdoor paper's ReChorus setting) or ``ce``, softmax over all items.

Padded keys are masked, as in Kang & McAuley's code, so a sequence's outputs do not depend on how far it is
padded: every batch is cut to its longest sequence (positions stay aligned on the right), and ``batching:
tokens`` groups users of similar length into batches of about ``batch_size`` x the mean sequence length
positions (most Amazon histories are a few items long, so a randomly drawn batch is mostly padding).

A :class:`PromptGenerator` (``prompt`` mode downstream, PEA) adds ``tokens`` prefix tokens per layer (one
in the paper), computed from the user's categorical features; the prefix is visible to every position and
is not itself a position of the output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from distrec.config import AtLeastOne, HalfOpenShare
from distrec.data.dataset import PreparedDataset
from distrec.data.matrix import UserItemCSR, contains
from distrec.data.preprocess import build_sequences
from distrec.metrics.ranking import full_ranking_metrics
from distrec.models.base import Victim, pick_device, set_seed
from distrec.models.registry import register_victim

LOSSES = ("bce", "bpr", "ce")
BATCHING = ("users", "tokens")


@dataclass
class SASRecConfig:
    """Defaults: S3-Rec's SASRec check settings (docs/methods.md section 6)."""

    dim: AtLeastOne = 64
    layers: AtLeastOne = 2
    heads: AtLeastOne = 2
    ffn_dim: AtLeastOne | None = None  # None: dim
    dropout: HalfOpenShare = 0.5
    max_len: AtLeastOne = 50
    norm_first: bool = True
    loss: Literal[LOSSES] = "bce"
    num_negatives: AtLeastOne = 1
    epochs: int = 200
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: AtLeastOne = 256
    batching: Literal[BATCHING] = "tokens"  # users: random batches of batch_size users
    seed: int = 0
    eval_every: int = 10
    patience: int = 5
    eval_metric: str = "ndcg@10"
    device: str | None = None

    def __post_init__(self):
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")


class Sequences:
    """Per-user item sequences (internal ids, time order) of a set of users: what SASRec trains on."""

    def __init__(self, users: np.ndarray, items: list[np.ndarray]):
        self.users, self.items = np.asarray(users, np.int64), items

    @classmethod
    def from_table(cls, table: pa.Table) -> Sequences:
        """From an interactions table in time order (timestamps, else row order: the prepared splits keep it)."""
        seq = build_sequences(table, use_row_order=table.column("timestamp").null_count > 0)
        offsets = seq.column("item_ids").combine_chunks().offsets.to_numpy()
        flat = seq.column("item_ids").combine_chunks().values.to_numpy()
        return cls(seq.column("user_id").to_numpy(), [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])])

    @classmethod
    def history(cls, dataset: PreparedDataset, splits=("train",)) -> Sequences:
        return cls.from_table(
            pa.concat_tables(
                [dataset.table(s).select(["user_id", "item_id", "timestamp"]) for s in splits if dataset.has(s)]
            )
        )

    def subset(self, users: np.ndarray, last: int | None = None) -> Sequences:
        """The sequences of ``users`` (those present), each cut to its ``last`` items."""
        keep = np.isin(self.users, users)
        cut = (lambda s: s[-last:]) if last else (lambda s: s)
        return Sequences(self.users[keep], [cut(s) for s, k in zip(self.items, keep) if k])

    def csr(self, n_users: int, n_items: int) -> UserItemCSR:
        """Every user's items as a matrix (the history a full ranking masks)."""
        users = np.repeat(self.users, [len(s) for s in self.items])
        items = np.concatenate(self.items) if self.items else np.zeros(0, np.int64)
        return UserItemCSR.from_arrays(users, items, n_users, n_items)

    def lookup(self) -> dict[int, np.ndarray]:
        return dict(zip(self.users.tolist(), self.items))

    def __len__(self) -> int:
        return len(self.users)


def left_padded(seqs: list[np.ndarray], length: int, trim: bool = False) -> torch.Tensor:
    """``[len(seqs), length]`` of item ids + 1, the last ``length`` of each sequence, 0 on the left;
    ``trim``: only as wide as the longest of them (at least 1)."""
    if trim:
        length = max(1, min(length, max((len(s) for s in seqs), default=1)))
    out = np.zeros((len(seqs), length), np.int64)
    for r, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[r, length - len(s) :] = s + 1
    return torch.from_numpy(out)


def token_batches(lengths: np.ndarray, budget: int, gen: torch.Generator, window: int = 50) -> list[torch.Tensor]:
    """Length-grouped batches: shuffle, sort each window of ``window`` x (users per batch) by length, cut it
    into batches of about ``budget`` positions, shuffle the batches (a batch of short histories holds more users)."""
    lengths = np.maximum(np.asarray(lengths, np.int64), 1)
    order = torch.randperm(len(lengths), generator=gen).numpy()
    span = window * max(1, int(budget / lengths.mean()))
    batches = []
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        cuts = np.searchsorted(np.cumsum(lengths[chunk]), np.arange(budget, lengths[chunk].sum(), budget), side="right")
        batches += [torch.as_tensor(b) for b in np.split(chunk, cuts) if len(b)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


class PromptGenerator(torch.nn.Module):
    """``tokens`` prefix tokens per layer from a user's categorical features: the sum of one embedding per
    feature, then a two-layer MLP to ``layers`` x ``tokens`` x ``dim`` (PEA / prompt tuning, docs/methods.md
    section 6: one token per layer; more is the prompt size a sweep can vary)."""

    def __init__(self, cardinalities: list[int], dim: int, layers: int, tokens: int = 1):
        super().__init__()
        if tokens < 1:
            raise ValueError(f"prompt tokens must be at least 1, got {tokens}")
        self.features = torch.nn.ModuleList(torch.nn.Embedding(c, dim) for c in cardinalities)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(dim, dim), torch.nn.ReLU(), torch.nn.Linear(dim, layers * tokens * dim)
        )
        self.layers, self.tokens, self.dim = layers, tokens, dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = sum(emb(features[:, k]) for k, emb in enumerate(self.features))
        return self.mlp(h).reshape(len(features), self.layers, self.tokens, self.dim)


@register_victim("sasrec")
class SASRec(Victim):
    """r_{u,i} = F_t^T M_i (Kang & McAuley 2018, eq. 6): F_t the last position's output of the causal
    self-attention blocks (eq. 2-5) over the item embeddings M plus learned positions P (eq. 1).

    Example::

        model = create_victim("sasrec", data.n_users, data.n_items, dim=64, layers=2)
        model.fit(data)
    """

    description = "Self-attentive sequential recommender: next item from a causal transformer"
    paper = "Kang and McAuley, ICDM 2018"

    Config = SASRecConfig

    def __init__(self, n_users: int, n_items: int, **config):
        super().__init__(n_users, n_items, **config)
        c = self.config
        set_seed(c.seed)
        self.item_emb = torch.nn.Embedding(n_items + 1, c.dim, padding_idx=0)
        self.pos_emb = torch.nn.Embedding(c.max_len, c.dim)
        self.blocks = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(
                c.dim,
                c.heads,
                c.ffn_dim or c.dim,
                c.dropout,
                activation="relu",
                batch_first=True,
                norm_first=c.norm_first,
            )
            for _ in range(c.layers)
        )
        self.final_norm = torch.nn.LayerNorm(c.dim) if c.norm_first else torch.nn.Identity()
        self.drop = torch.nn.Dropout(c.dropout)
        torch.nn.init.normal_(self.item_emb.weight, std=0.02)
        torch.nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.prompt: PromptGenerator | None = None
        self.user_features: torch.Tensor | None = None  # [n_users, F] feature ids for the prompt
        self.histories: dict[int, np.ndarray] = {}
        self.poison = None  # a backdoor attack's label / negative rewriting during fit (distrec.attacks.backdoor)

    # -- the network ---------------------------------------------------------------------------------
    def encode(self, seqs: torch.Tensor, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs ``[B, L, dim]`` of left-padded ``seqs`` (ids + 1); ``prompt [B, layers, T, dim]`` adds T
        prefix tokens before each layer's input."""
        length = seqs.shape[1]
        keep = (seqs > 0)[..., None]
        positions = torch.arange(self.config.max_len - length, self.config.max_len, device=seqs.device)
        x = self.item_emb(seqs) * self.config.dim**0.5 + self.pos_emb(positions)[None]
        x = self.drop(x) * keep
        prefix = 0 if prompt is None else prompt.shape[2]
        mask = self._attention_mask(seqs, prefix)
        for k, block in enumerate(self.blocks):
            h = block(torch.cat([prompt[:, k], x], 1) if prefix else x, src_mask=mask)
            x = h[:, prefix:] * keep  # padded positions stay zero (as SASRec's timeline mask)
        return self.final_norm(x)

    def _attention_mask(self, seqs: torch.Tensor, prefix: int) -> torch.Tensor:
        """``[B * heads, W, W]``, True where a query may not look: later positions and padded keys (each
        position still sees itself, so a padded row is not empty); the ``prefix`` tokens are visible to all."""
        padded = torch.cat([torch.zeros(len(seqs), prefix, dtype=torch.bool, device=seqs.device), seqs == 0], 1)
        width = padded.shape[1]
        causal = torch.triu(torch.ones(width, width, dtype=torch.bool, device=seqs.device), 1)
        causal[:, :prefix] = False
        mask = (causal[None] | padded[:, None, :]) & ~torch.eye(width, dtype=torch.bool, device=seqs.device)[None]
        return mask.repeat_interleave(self.config.heads, 0)

    def prompts_for(self, users: torch.Tensor) -> torch.Tensor | None:
        if self.prompt is None:
            return None
        return self.prompt(self.user_features[users.to(self.user_features.device)])

    def user_vectors(self, users: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
        return self.encode(seqs, self.prompts_for(users))[:, -1]

    def item_vectors(self) -> torch.Tensor:
        return self.item_emb.weight[1:]

    def score(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item after each user's attached history (:meth:`attach` / :meth:`set_histories`)."""
        seqs = left_padded(
            [self.histories.get(int(u), np.zeros(0, np.int64)) for u in users.tolist()], self.config.max_len, trim=True
        ).to(users.device)
        return self.user_vectors(users, seqs) @ self.item_vectors().T

    def attach(self, dataset: PreparedDataset, splits=("train", "valid")) -> SASRec:
        """Score after the users' items in ``splits`` (for the test item: train and valid)."""
        return self.set_histories(Sequences.history(dataset, splits))

    def set_histories(self, sequences: Sequences) -> SASRec:
        self.histories = sequences.lookup()
        return self

    def attach_prompt(self, prompt: PromptGenerator, user_features: torch.Tensor) -> SASRec:
        self.prompt, self.user_features = prompt, user_features
        return self

    # -- training ------------------------------------------------------------------------------------
    def _examples(self, seqs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (all but the last item) and next-item labels (ids, -1 where padded), left-padded."""
        inputs = left_padded([s[:-1] for s in seqs], self.config.max_len, trim=True)
        labels = left_padded([s[1:] for s in seqs], self.config.max_len, trim=True) - 1
        return inputs, labels

    def _negatives(self, labels: torch.Tensor, seqs: list[np.ndarray], gen: torch.Generator) -> torch.Tensor:
        """``[B, L, num_negatives]`` items not in the user's sequence (rejection sampling, as S3-Rec's sampler)."""
        rows = np.concatenate([np.full(len(s), r) for r, s in enumerate(seqs)])
        seen = np.unique(rows * self.n_items + np.concatenate(seqs))
        neg = torch.randint(0, self.n_items, (*labels.shape, self.config.num_negatives), generator=gen)
        row_of = torch.arange(len(seqs))[:, None, None].expand_as(neg)
        for _ in range(100):
            keys = (row_of * self.n_items + neg).numpy()
            bad = torch.as_tensor(contains(seen, keys))
            if not bad.any():
                break
            neg[bad] = torch.randint(0, self.n_items, (int(bad.sum()),), generator=gen)
        return neg

    def _batches(self, train: list[np.ndarray], gen: torch.Generator) -> list[torch.Tensor]:
        c = self.config
        if c.batching == "tokens":
            lengths = np.minimum([len(s) - 1 for s in train], c.max_len)
            return token_batches(lengths, int(c.batch_size * lengths.mean()), gen)
        return list(torch.randperm(len(train), generator=gen).split(c.batch_size))

    def batch_loss(
        self, users: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor, negatives: torch.Tensor | None
    ) -> torch.Tensor:
        """The loss of one batch over its non-padded positions."""
        out = self.encode(inputs, self.prompts_for(users))
        mask = labels >= 0
        if self.config.loss == "ce":
            return F.cross_entropy(out[mask] @ self.item_vectors().T, labels[mask])
        pos = (out * self.item_emb(labels.clamp_min(0) + 1)).sum(-1)
        neg = (out[:, :, None, :] * self.item_emb(negatives + 1)).sum(-1)
        if self.config.loss == "bpr":
            return -F.logsigmoid(pos[..., None] - neg)[mask].mean()
        return F.binary_cross_entropy_with_logits(
            pos[mask], torch.ones_like(pos[mask])
        ) + F.binary_cross_entropy_with_logits(neg[mask], torch.zeros_like(neg[mask]))

    def fit(
        self,
        dataset: PreparedDataset,
        valid_split: str | None = None,
        progress: bool = True,
        on_epoch=None,
        sequences: Sequences | None = None,
        parameters=None,
    ) -> list[dict]:
        """Train on ``sequences`` (default: every user's ``train`` sequence); with ``valid_split``, evaluate
        full-ranking ``eval_metric`` every ``eval_every`` epochs on those users, stop after ``patience``
        evaluations without improvement and keep the best weights. ``parameters``: the ones to train
        (default all: prompt tuning passes the prompt generator's)."""
        c = self.config
        device = pick_device(c.device)
        self.to(device)
        if self.user_features is not None:
            self.user_features = self.user_features.to(device)
        sequences = sequences or Sequences.history(dataset, ("train",))
        train = [s for s in sequences.items if len(s) >= 2]
        users = torch.as_tensor(np.array([u for u, s in zip(sequences.users, sequences.items) if len(s) >= 2]))
        opt = torch.optim.Adam(
            list(parameters) if parameters is not None else self.parameters(), lr=c.lr, weight_decay=c.weight_decay
        )
        gen = torch.Generator().manual_seed(c.seed)
        validate = (
            _Validation(self, dataset, valid_split, sequences) if valid_split and dataset.has(valid_split) else None
        )
        history, best, best_state, bad = [], -1.0, None, 0
        for epoch in tqdm(range(c.epochs), desc=f"{self.name} fit", disable=not progress, unit="epoch"):
            self.train()
            total, positions = 0.0, 0
            for idx in self._batches(train, gen):
                inputs, labels = self._examples([train[i] for i in idx.tolist()])
                b_users = users[idx]
                if self.poison is not None:
                    labels = self.poison.labels(b_users, labels, gen)
                negatives = None if c.loss == "ce" else self._negatives(labels, [train[i] for i in idx.tolist()], gen)
                if self.poison is not None and negatives is not None:
                    negatives = self.poison.negatives(b_users, labels, negatives, gen)
                opt.zero_grad(set_to_none=True)
                loss = self.batch_loss(
                    b_users.to(device),
                    inputs.to(device),
                    labels.to(device),
                    None if negatives is None else negatives.to(device),
                )
                loss.backward()
                opt.step()
                n = int((labels >= 0).sum())
                total, positions = total + loss.item() * n, positions + n
            self.eval()
            record = {"epoch": epoch, "loss": total / max(positions, 1)}
            if validate is not None and ((epoch + 1) % c.eval_every == 0 or epoch + 1 == c.epochs):
                record.update(validate())
                if record[f"valid_{c.eval_metric}"] > best:
                    best, bad = record[f"valid_{c.eval_metric}"], 0
                    best_state = {k: v.detach().clone() for k, v in self.state_dict().items()}
                else:
                    bad += 1
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
            if validate is not None and bad >= c.patience:
                break
        if best_state is not None:
            self.load_state_dict(best_state)
        self.set_histories(sequences)
        return history


class _Validation:
    """Full-ranking metrics of the valid item after each user's training sequence, history masked."""

    def __init__(self, model: SASRec, dataset: PreparedDataset, split: str, sequences: Sequences):
        self.model = model
        target = dataset.table(split)
        keep = np.isin(target.column("user_id").to_numpy(), sequences.users)
        target = target.filter(pa.array(keep))
        self.truth = UserItemCSR.from_table(target, model.n_users, model.n_items)
        self.seen = sequences.csr(model.n_users, model.n_items)
        self.sequences = sequences

    def __call__(self) -> dict:
        self.model.set_histories(self.sequences)
        with torch.no_grad():
            m = full_ranking_metrics(
                self.model.score, self.seen, self.truth, (10, 20), device=next(self.model.parameters()).device
            )
        return {f"valid_{k}": v for k, v in m.items() if k.startswith(("hr", "ndcg"))}
