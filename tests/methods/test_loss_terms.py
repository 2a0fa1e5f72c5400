"""Every method declares what each of its logged loss terms is (`PretrainMethod.loss_terms`), so
that reports tell reconstruction from distillation without knowing any method by name."""

from __future__ import annotations

import pytest
from method_helpers import build, make_batch
from test_pumit import VIT, _batch, _tokenizer_method, tokenizer_ckpt  # noqa: F401 (a fixture)

from medmim.methods.base import LOSS_KINDS
from medmim.registry import METHODS
from medmim.types import TrainContext

PACKAGE_METHODS = [
    n for n in METHODS.names() if METHODS.get(n).__module__.startswith("medmim.methods.")
]
DISTILLATION = [n for n in PACKAGE_METHODS if not n.startswith("pumit")]


def logged_terms(logs: dict) -> set[str]:
    return {k.split("/", 1)[1] for k in logs if k.startswith("loss/")}


@pytest.mark.parametrize("name", PACKAGE_METHODS)
def test_every_method_declares_its_terms_with_known_kinds(name: str) -> None:
    terms = METHODS.get(name).loss_terms
    assert terms, f"{name}: declare loss_terms = {{term: kind}}"
    assert set(terms.values()) <= set(LOSS_KINDS), terms


@pytest.mark.parametrize("name", DISTILLATION)
def test_every_logged_term_is_declared(name: str) -> None:
    method = build(name, koleo_weight=0.1)  # KoLeo on: its term is logged too
    out = method(make_batch(), step=0)
    assert logged_terms(out.logs) <= set(method.loss_terms), out.logs.keys()
    assert "distillation" in {method.loss_terms[t] for t in logged_terms(out.logs)}


def test_pumit_terms_are_declared(tokenizer_ckpt) -> None:  # noqa: F811
    tokenizer = _tokenizer_method()
    assert logged_terms(tokenizer(_batch(), step=0).logs) <= set(tokenizer.loss_terms)
    mim = METHODS.build(
        {"name": "pumit_mim", "tokenizer": tokenizer_ckpt}, backbone=VIT, context=TrainContext()
    )
    assert logged_terms(mim(_batch(), step=0).logs) <= set(mim.loss_terms)
