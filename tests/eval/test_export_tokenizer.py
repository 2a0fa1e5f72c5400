"""`medmim export` of a PUMIT tokenizer run: the tokenizer is exported, stage 2 loads it from
the export, and the downstream loader refuses it with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medmim.cli.main import main
from medmim.errors import DataError
from medmim.eval.export import export, is_tokenizer, load_encoder, read_export
from medmim.models.tokenizer import TOKENIZERS, load_tokenizer

TOKENIZER = {
    "name": "soft_vq_tokenizer",
    "channels": [8, 8, 16],
    "codebook_size": 32,
    "embed_dim": 8,
}


def test_tokenizer_run_exports_and_feeds_stage_2(tmp_path: Path, capsys) -> None:
    tok = TOKENIZERS.build(TOKENIZER)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    config = {"method": {"name": "pumit_tokenizer"}, "data": {"recipe": {"spacing": None}}}
    torch.save({"encoder": tok.state_dict(), "encoder_config": tok.config, "config": config}, ckpt)
    assert is_tokenizer(tok.config) and not is_tokenizer({"name": "vit_demo"})

    assert main(["export", str(tmp_path / "run")]) == 0
    out = tmp_path / "run" / "export"
    assert f"method.tokenizer={out}" in capsys.readouterr().out
    meta, _ = read_export(out)
    assert meta["backbone"] == tok.config and meta["method"] == "pumit_tokenizer"
    loaded = load_tokenizer(out)  # what pumit_mim's method.tokenizer=DIR does
    for key, value in tok.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(
        DataError,
        match=r"holds a PUMIT tokenizer \('soft_vq_tokenizer'\), not an "
        r"encoder for downstream tasks: train stage 2 on it",
    ):
        load_encoder(out)
    assert export(ckpt, tmp_path / "again") == tmp_path / "again"
