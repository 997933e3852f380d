"""The shared mini-batch training loop of the SGD-trained victims (MF-BPR, LightGCN, SGL, SimGCL, NeuMF)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm

from distrec.config import Fraction
from distrec.data.dataset import PreparedDataset
from distrec.data.matrix import UserItemCSR
from distrec.data.streaming import SAMPLINGS, InteractionStream
from distrec.metrics.ranking import full_ranking_metrics
from distrec.models.base import Victim, pick_device

LR_SCHEDULES = ("exponential", "cosine")


class EarlyStopping:
    """Validation bookkeeping shared by every victim's ``fit``: evaluates Recall@20 (and the other
    full-ranking metrics) on the validation split, keeps the best weights, and says when ``patience``
    evaluations in a row brought no improvement."""

    def __init__(self, model: Victim, train: UserItemCSR, valid: UserItemCSR, patience: int, device):
        self.model, self.train, self.valid, self.patience, self.device = model, train, valid, patience, device
        self.best, self.best_state, self.bad = -1.0, None, 0

    @staticmethod
    def due(epoch: int, epochs: int, every: int) -> bool:
        """Evaluate every ``every`` epochs and after the last one."""
        return (epoch + 1) % every == 0 or epoch + 1 == epochs

    def evaluate(self, record: dict) -> None:
        """Add ``valid_*`` metrics to ``record`` and remember the weights if they are the best so far."""
        metrics = full_ranking_metrics(self.model.score, self.train, self.valid, (20,), device=self.device)
        record.update({f"valid_{k}": v for k, v in metrics.items() if k != "n_users"})
        if record["valid_recall@20"] > self.best:
            self.best, self.bad = record["valid_recall@20"], 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.bad += 1

    @property
    def stop(self) -> bool:
        return self.bad >= self.patience

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)


@dataclass
class TrainConfig:
    """Fields every SGD-trained victim shares (each victim's Config extends this). ``lr_schedule``:
    ``exponential`` (epoch e trains at ``lr * lr_decay ** e``; ``lr_decay`` 1: constant) or ``cosine``
    (annealed from ``lr`` to 0 over ``epochs``); ``sampling``: how an epoch draws its training rows
    (:class:`~distrec.data.streaming.InteractionStream`)."""

    epochs: int = 50
    lr: float = 1e-3
    lr_schedule: Literal[LR_SCHEDULES] = "exponential"
    lr_decay: Fraction = 1.0
    batch_size: int = 2048
    num_negatives: int = 1
    seed: int = 0
    eval_every: int = 5
    patience: int = 3
    backend: str = "auto"
    sampling: Literal[SAMPLINGS] = "interaction"
    device: str | None = None

    def __post_init__(self):
        if self.lr_schedule == "cosine" and self.lr_decay != 1:
            raise ValueError(
                f"lr_decay={self.lr_decay} applies to lr_schedule 'exponential' only; drop it with 'cosine'"
            )
        if self.sampling == "user" and self.backend == "ray":
            raise ValueError("sampling='user' draws rows at random and needs backend 'memory' or 'auto'")

    def scheduler(self, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        """The per-epoch learning-rate schedule; cosine is SGDR's annealing (Loshchilov & Hutter 2017,
        eq. 5) without restarts: lr_e = lr * (1 + cos(pi * e / epochs)) / 2."""
        if self.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs)
        return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.lr_decay)


class TrainingObjective:
    """How one mini-batch becomes gradients: plain training back-propagates the victim's loss; a
    training-time defense (:mod:`distrec.defenses`) replaces it, e.g. with APR's adversarial term."""

    def backward(
        self, model: PairwiseVictim, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, epoch: int
    ) -> torch.Tensor:
        """Accumulate the batch's gradients into the parameters; returns the (detached) loss value."""
        loss = model.loss(users, pos, neg)
        loss.backward()
        return loss.detach()

    def end_epoch(self, model: PairwiseVictim, dataset: PreparedDataset, record: dict) -> None:
        """After each epoch, with the model in eval mode: e.g. RAWP's selection of the best epoch (adds to
        ``record``)."""

    def after_fit(self, model: PairwiseVictim, dataset: PreparedDataset, progress: bool) -> list[dict]:
        """A second training stage after the epochs (RAWP-FT's robust fine-tuning); its history records."""
        return []


class PairwiseVictim(Victim):
    """A victim trained on ``(user, positive, negatives)`` batches; subclasses define ``loss(batch)``.

    ``prepare_fit(dataset)`` lets a subclass build what it needs from the training split (a graph);
    ``objective`` turns a batch into gradients (a defense may set it); ``embedding_parameters()`` are
    the embedding tables an embedding-perturbation defense (APR) perturbs."""

    objective: TrainingObjective = TrainingObjective()

    def embedding_parameters(self) -> list[torch.nn.Parameter]:
        raise NotImplementedError(f"{self.name} has no embedding tables to perturb")

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prepare_fit(self, dataset: PreparedDataset, device: torch.device) -> None:
        """Hook run once before training, with the model already on ``device``."""

    def start_epoch(self, epoch: int) -> None:
        """Hook run before each epoch (SGL draws its augmented graphs here)."""

    def fit(
        self, dataset: PreparedDataset, valid_split: str | None = None, progress: bool = True, on_epoch=None
    ) -> list[dict]:
        """Train on the ``train`` split; with ``valid_split``, evaluate Recall@20 every ``eval_every``
        epochs, stop after ``patience`` evaluations without improvement and keep the best weights.
        ``on_epoch(record)`` is called after every epoch (learning curves, checkpoints)."""
        cfg = self.config
        device = pick_device(cfg.device)
        self.to(device)
        self.prepare_fit(dataset, device)
        stream = InteractionStream(
            dataset,
            "train",
            batch_size=cfg.batch_size,
            num_negatives=cfg.num_negatives,
            seed=cfg.seed,
            backend=cfg.backend,
            sampling=cfg.sampling,
        )
        opt = torch.optim.Adam(self.parameters(), lr=cfg.lr)
        decay = cfg.scheduler(opt)
        stopper = None
        if valid_split:
            train_csr = UserItemCSR.from_table(dataset.table("train"), self.n_users, self.n_items)
            valid_csr = UserItemCSR.from_table(dataset.table(valid_split), self.n_users, self.n_items)
            stopper = EarlyStopping(self, train_csr, valid_csr, cfg.patience, device)
        history = []
        bar = tqdm(range(cfg.epochs), desc=f"{self.name} fit", disable=not progress, unit="epoch")
        for epoch in bar:
            self.train()
            self.start_epoch(epoch)
            total, n = 0.0, 0
            for batch in stream.epoch(epoch):
                neg = batch["neg_item"].to(device)
                opt.zero_grad(set_to_none=True)
                loss = self.objective.backward(
                    self,
                    batch["user_id"].to(device),
                    batch["item_id"].to(device),
                    neg if cfg.num_negatives > 1 else neg[:, 0],
                    epoch,
                )
                opt.step()
                total += loss.item() * len(batch["user_id"])
                n += len(batch["user_id"])
            self.eval()
            record = {"epoch": epoch, "loss": total / max(n, 1), "lr": opt.param_groups[0]["lr"]}
            decay.step()
            self.objective.end_epoch(self, dataset, record)
            if stopper is not None and stopper.due(epoch, cfg.epochs, cfg.eval_every):
                stopper.evaluate(record)
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if stopper is not None and stopper.stop:
                break
        if stopper is not None:
            stopper.restore_best()
        history += self.objective.after_fit(self, dataset, progress)
        return history
