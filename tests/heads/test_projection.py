import copy

import torch
from torch import nn

from medmim.heads.projection import ProjectionHead
from medmim.registry import HEADS


def small(**kw) -> ProjectionHead:
    return ProjectionHead(in_dim=12, out_dim=16, hidden_dim=24, bottleneck_dim=8, **kw)


def test_paper_dimensions() -> None:
    head = HEADS.build({"name": "projection", "in_dim": 384})
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (384, 2048),
        (2048, 2048),
        (2048, 256),
    ]
    assert sum(isinstance(m, nn.GELU) for m in head.mlp) == 2
    assert not any(isinstance(m, nn.BatchNorm1d) for m in head.modules())
    assert head.last_layer.weight.shape == (8192, 256)
    assert head(torch.randn(2, 384)).shape == (2, 8192)


def test_shapes_and_normalised_features() -> None:
    head = small()
    assert head(torch.randn(3, 12)).shape == (3, 16)
    assert head(torch.randn(3, 2, 12)).shape == (3, 2, 16)  # e.g. [pooled, cls]
    assert head(torch.randn(3, 27, 12), tokens="patch").shape == (3, 27, 16)
    z = head.embed(torch.randn(5, 12) * 10)
    assert torch.allclose(z.norm(dim=-1), torch.ones(5), atol=1e-5)


def test_last_layers_are_separate_named_and_weight_g_frozen() -> None:
    head = small()
    names = [n for n, _ in head.named_parameters() if "last_layer" in n]
    assert len(names) == 4  # g and v of last_layer and last_layer_patch
    x = torch.randn(4, 12)
    assert not torch.allclose(head(x), head(x, tokens="patch"))
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.equal(g, torch.ones_like(g))
    # each prototype has unit norm, so logits of unit features are cosines
    assert torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(16), atol=1e-5)
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=1.0)
    v_before = head.last_layer.parametrizations.weight.original1.detach().clone()
    (head(x).sum() + head(x, tokens="patch").square().sum()).backward()
    opt.step()
    assert torch.equal(g, torch.ones_like(g)) and g.grad is None
    assert not torch.equal(v_before, head.last_layer.parametrizations.weight.original1)


def test_switches() -> None:
    shared = small(share_last_layer=True)
    x = torch.randn(4, 12)
    assert shared.last_layer_patch is None
    assert torch.equal(shared(x), shared(x, tokens="patch"))
    free = small(norm_last_layer=False)
    assert free.last_layer.parametrizations.weight.original0.requires_grad


def test_deepcopy_and_state_dict_round_trip() -> None:
    head = small()
    twin = copy.deepcopy(head)
    x = torch.randn(2, 12)
    assert torch.equal(head(x), twin(x))
    other = small()
    other.load_state_dict(head.state_dict())
    assert torch.equal(head(x, tokens="patch"), other(x, tokens="patch"))
