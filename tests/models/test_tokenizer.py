"""Soft-token tokenizer: eq. 1, shapes for every DA, grid = ViT grid, loading, registry."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from medmim.errors import ConfigError
from medmim.models.tokenizer import TOKENIZERS, SoftVQTokenizer, load_tokenizer, to_tokenizer_range
from medmim.models.universal_vit import UniversalViT

TINY = {"channels": (8, 8, 16), "codebook_size": 32, "embed_dim": 8}


@pytest.mark.parametrize("da", [0, 1, 2, 3, 4, 5])
def test_decoder_restores_input_shape_and_grid_matches_vit(da: int) -> None:
    tok = SoftVQTokenizer(**TINY)
    tz = 1 if 2**da > 16 else 2
    x = torch.randn(1, 1, tz * max(16 >> da, 1), 32, 32)
    spacing = (float(2**da) if da < 5 else float("inf"), 1.0, 1.0)
    out = tok(x, spacing)
    assert out.recon.shape == x.shape
    assert out.logits.shape == (1, tz, 2, 2, 32)
    vit = UniversalViT(embed_dim=16, depth=1, num_heads=2, pos_embed_shape=None)
    assert tok.token_grid(x.shape, spacing) == vit.mask_grid(x.shape, spacing)


def test_soft_token_is_the_expected_codebook_vector() -> None:
    tok = SoftVQTokenizer(**TINY)
    probs = torch.softmax(torch.randn(2, 1, 2, 2, 32), dim=-1)
    expected = torch.einsum("bdhwk,ke->bedhw", probs, tok.codebook.weight)
    torch.testing.assert_close(tok.embed(probs), expected)
    one_hot = torch.nn.functional.one_hot(torch.tensor(5), 32).float().view(1, 1, 1, 1, 32)
    torch.testing.assert_close(tok.embed(one_hot)[0, :, 0, 0, 0], tok.codebook.weight[5])


def test_token_probs_are_distributions_without_gradient() -> None:
    tok = SoftVQTokenizer(**TINY)
    p = tok.token_probs(torch.randn(2, 1, 16, 32, 32))
    assert p.shape == (2, 4, 32) and not p.requires_grad
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 4))
    assert to_tokenizer_range(torch.tensor([0.0, 0.5, 1.0])).tolist() == [-1.0, 0.0, 1.0]


def test_registry_presets_and_paper_size() -> None:
    assert {"pumit_tokenizer", "pumit_tokenizer_demo", "soft_vq_tokenizer"} <= set(
        TOKENIZERS.names()
    )
    with torch.device("meta"):
        paper = TOKENIZERS.build("pumit_tokenizer")
    assert paper.codebook.weight.shape == (1024, 512) and paper.stride == 16
    with pytest.raises(ConfigError, match="no option 'codebok_size'"):
        TOKENIZERS.build({"name": "pumit_tokenizer_demo", "codebok_size": 3})


def test_load_from_checkpoint_and_export(tmp_path) -> None:
    tok = SoftVQTokenizer(**TINY)
    torch.save({"encoder": tok.state_dict(), "encoder_config": tok.config}, tmp_path / "last.ckpt")
    x = torch.randn(1, 1, 16, 32, 32)
    loaded = load_tokenizer(tmp_path / "last.ckpt")
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    torch.testing.assert_close(loaded.token_probs(x), tok.token_probs(x))
    export = tmp_path / "export"
    export.mkdir()
    save_file(tok.state_dict(), str(export / "encoder.safetensors"))
    (export / "encoder.json").write_text(json.dumps({"backbone": tok.config}), encoding="utf-8")
    torch.testing.assert_close(load_tokenizer(export).token_probs(x), tok.token_probs(x))


def test_load_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist: train one first"):
        load_tokenizer(tmp_path / "missing.ckpt")
    torch.save({"encoder": {}, "encoder_config": {"name": "uvit_demo"}}, tmp_path / "vit.ckpt")
    with pytest.raises(ConfigError, match="holds a 'uvit_demo', not a tokenizer"):
        load_tokenizer(tmp_path / "vit.ckpt")
