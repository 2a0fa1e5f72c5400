"""Codebook utilisation statistics and plot of a PUMIT tokenizer."""

from __future__ import annotations

import math

import numpy as np
import torch

from medmim.eval.codebook import CodebookStatistics, codebook_statistics, plot_codebook_usage
from medmim.models.tokenizer import SoftVQTokenizer


def test_statistics_count_every_token() -> None:
    tok = SoftVQTokenizer(channels=(8, 8, 16), codebook_size=16, embed_dim=8).eval()
    batches = [(torch.rand(2, 1, 16, 32, 32), None), (torch.rand(1, 1, 8, 32, 32), (2.0, 1.0, 1.0))]
    stats = codebook_statistics(tok, batches)
    assert stats.tokens == 2 * 4 + 1 * 4
    assert math.isclose(stats.soft.sum(), 12, rel_tol=1e-6) and stats.hard.sum() == 12
    assert 0 < stats.mean_entropy <= math.log(16) + 1e-9
    assert 1 <= stats.perplexity <= 16


def test_perplexity_and_plot(tmp_path) -> None:
    uniform = CodebookStatistics(np.ones(8), np.ones(8), 8, 0.0)
    assert math.isclose(uniform.perplexity, 8.0) and uniform.used_fraction == 1.0
    skewed = CodebookStatistics(np.array([6.0, 2, 0, 0]), np.array([8.0, 0, 0, 0]), 8, 0.1)
    assert skewed.used_fraction == 0.25 and 1 < skewed.perplexity < 2
    path = plot_codebook_usage(skewed, tmp_path / "figures" / "codebook.png")
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
