"""Codebook utilisation of a PUMIT tokenizer (paper Fig. 3 and the "2.791 nats" sharpness figure).

`codebook_statistics` runs the frozen tokenizer over batches and accumulates, per code, the
soft usage (sum of token probabilities) and the hard usage (how often it is a token's argmax), plus
the mean per-token entropy. `plot_codebook_usage` draws the usage percentages sorted from the most
to the least used code, on a log axis, next to the uniform level 100/K %: a balanced codebook
keeps every bar within an order of magnitude or so of that line.

Example:
    >>> stats = codebook_statistics(tokenizer, [(x, spacing)])
    >>> plot_codebook_usage(stats, "runs/tok/figures/codebook_usage.png")
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from medmim.eval.plots import save_figure  # noqa: E402
from medmim.models.tokenizer import SoftVQTokenizer, to_tokenizer_range  # noqa: E402


@dataclass
class CodebookStatistics:
    """Per-code usage over a set of images.

    Attributes:
        soft: (K,) sum over tokens of p_ik.
        hard: (K,) number of tokens whose argmax is k.
        tokens: number of tokens seen.
        mean_entropy: mean per-token entropy H(p_i) in nats (paper: 2.791 vs log 1024 = 6.93).
    """

    soft: np.ndarray
    hard: np.ndarray
    tokens: int
    mean_entropy: float

    @property
    def perplexity(self) -> float:
        """exp(H(p_bar)) of the soft usage: the effective number of codes in use."""
        p = self.soft / max(self.soft.sum(), 1e-12)
        p = p[p > 0]
        return float(math.exp(-(p * np.log(p)).sum()))

    @property
    def used_fraction(self) -> float:
        """Fraction of codes that are the argmax of at least one token."""
        return float((self.hard > 0).mean())


@torch.no_grad()
def codebook_statistics(
    tokenizer: SoftVQTokenizer, batches: Iterable[tuple[Tensor, Tensor | Sequence[float] | None]]
) -> CodebookStatistics:
    """Accumulate usage over `(x, spacing)` batches, x (B, C, D, H, W) in [0, 1]."""
    k = tokenizer.codebook_size
    soft, hard, tokens, entropy = (
        torch.zeros(k, dtype=torch.float64),
        torch.zeros(k, dtype=torch.float64),
        0,
        0.0,
    )
    device = next(tokenizer.parameters()).device
    for x, spacing in batches:
        p = (
            tokenizer.token_probs(to_tokenizer_range(x.to(device)), spacing)
            .reshape(-1, k)
            .double()
            .cpu()
        )
        soft += p.sum(0)
        hard += torch.bincount(p.argmax(-1), minlength=k).double()
        entropy += float(-(torch.special.xlogy(p, p)).sum())
        tokens += p.shape[0]
    return CodebookStatistics(soft.numpy(), hard.numpy(), tokens, entropy / max(tokens, 1))


def plot_codebook_usage(
    stats: CodebookStatistics, path: str | Path, title: str = "codebook utilisation"
) -> Path:
    """Sorted per-code usage (% of tokens, soft and argmax) on a log axis; writes a PNG."""
    k = len(stats.soft)
    soft = np.sort(stats.soft / max(stats.soft.sum(), 1e-12) * 100)[::-1]
    hard = np.sort(stats.hard / max(stats.hard.sum(), 1e-12) * 100)[::-1]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(np.arange(k), soft, width=1.0, color="tab:blue", label="soft (mean p)")
    ax.plot(
        np.arange(k), np.where(hard > 0, hard, np.nan), color="tab:orange", lw=1, label="argmax"
    )
    ax.axhline(100 / k, color="grey", ls="--", lw=1, label=f"uniform {100 / k:.3g}%")
    ax.set(
        yscale="log",
        xlabel="code (sorted by usage)",
        ylabel="usage (%)",
        xlim=(-0.5, k - 0.5),
        title=f"{title}: perplexity {stats.perplexity:.0f}/{k}, used {stats.used_fraction:.0%}, "
        f"H(p_i) {stats.mean_entropy:.2f} nats",
    )
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
