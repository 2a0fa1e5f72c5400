"""The two classification protocols: linear probing and full fine-tuning.

- Linear probing (SMART Tables 2-3 "Linear Probing"): the encoder is frozen; its embeddings are
  standardised and a multinomial logistic regression (scikit-learn, L2, `C`) is fitted on them.
- Fine-tuning (SMART "Fine-tuning"; PUMIT classification): encoder + a linear head on the chosen
  embedding, cross-entropy, AdamW with a per-step warm-up + cosine learning rate, the epoch with the
  best validation AUC kept (PUMIT's model selection), then applied to the test set.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from medmim.eval.encoders import embed
from medmim.eval.metrics import classification_metrics
from medmim.schedules import warmup_cosine

log = logging.getLogger(__name__)


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    eval_x: list[np.ndarray],
    num_classes: int,
    C: float = 1.0,
    seed: int = 0,
) -> list[np.ndarray]:
    """Fit standardisation + logistic regression on frozen embeddings; class probabilities.

    Args:
        train_x: (N, C') training embeddings.
        train_y: (N,) integer labels in 0..K-1.
        eval_x: arrays (M_i, C') to predict.
        num_classes: K; classes absent from the training subset get probability 0.
        C: inverse L2 strength of the logistic regression.
        seed: its random_state.

    Returns:
        One (M_i, K) probability array per `eval_x`.
    """
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000, random_state=seed))
    clf.fit(train_x, train_y)
    classes = clf.classes_
    out = []
    for x in eval_x:
        probs = np.zeros((len(x), num_classes))
        if len(x):
            probs[:, classes] = clf.predict_proba(x)
        out.append(probs)
    return out


class ClassifierNet(nn.Module):
    """Encoder + linear head on one embedding (`cls`, `pooled`, ...).

    Args:
        encoder: a backbone with `forward_features`.
        feature: which embedding (see medmim.eval.encoders).
        width: its channels C'.
        num_classes: K.
    """

    def __init__(self, encoder: nn.Module, feature: str, width: int, num_classes: int) -> None:
        super().__init__()
        self.encoder, self.feature, self.num_classes = encoder, feature, num_classes
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, D, H, W) -> (B, K) logits."""
        return self.head(embed(self.encoder, x, self.feature))


@dataclass
class FinetuneConfig:
    """Options of `finetune` (defaults: CPU-friendly; SMART used lr 2e-4, batch 40, 1000 epochs)."""

    epochs: int = 10
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    batch_size: int = 8
    clip_grad: float = 1.0
    amp: bool = False
    num_workers: int = 0


@torch.no_grad()
def predict(
    model: ClassifierNet, loader: DataLoader, device: torch.device, amp: bool = False
) -> np.ndarray:
    """(M, K) softmax probabilities over a loader of (x, y) batches ((0, K) when it is empty)."""
    model.eval()
    out = []
    for x, _ in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x.to(device))
        out.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.num_classes))


def _val_score(y: np.ndarray, probs: np.ndarray) -> float:
    if len(y) == 0:
        return 0.0
    m = classification_metrics(y, probs)
    return m["auc"] if np.isfinite(m["auc"]) else m["accuracy"]


def finetune(
    model: ClassifierNet,
    train: DataLoader,
    val: DataLoader,
    val_y: np.ndarray,
    cfg: FinetuneConfig,
    device: torch.device,
    progress: bool = True,
) -> dict[str, float]:
    """Train `model` in place; keep the weights of the epoch with the best validation AUC.

    Returns:
        {"best_epoch", "best_val_auc", "last_loss"}.
    """
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = max(1, cfg.epochs * len(train))
    warmup = int(cfg.warmup_epochs * len(train))
    best, best_state, best_epoch, step, loss = -np.inf, None, -1, 0, torch.zeros(())
    for epoch in tqdm(range(cfg.epochs), desc="fine-tune", disable=not progress, leave=False):
        model.train()
        for x, y in train:
            for group in opt.param_groups:
                group["lr"] = warmup_cosine(step, total, cfg.lr, 0.0, warmup)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                loss = nn.functional.cross_entropy(model(x.to(device)).float(), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            opt.step()
            step += 1
        score = _val_score(val_y, predict(model, val, device, cfg.amp))
        log.debug("epoch %d loss %.4f val %.4f", epoch, float(loss.detach()), score)
        if score > best:
            best, best_epoch = score, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
    if best_state is not None:
        model.load_state_dict(best_state)
    return {
        "best_epoch": best_epoch,
        "best_val_auc": float(best),
        "last_loss": float(loss.detach()),
    }
