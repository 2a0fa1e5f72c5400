"""`init_from` loads pretrained weights into the student; the teacher must follow (not
stay random).
"""

import pytest
import torch
from method_helpers import build


@pytest.mark.parametrize("name", ["smart", "smit", "ibot"])
def test_on_encoder_loaded_copies_student_into_teacher(name: str) -> None:
    method = build(name)
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(torch.randn_like(p))  # stands in for pretrained weights loaded by the engine
    teacher = method.teacher["backbone"]
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    method.on_encoder_loaded()
    student = dict(method.encoder.named_parameters())
    for n, p in teacher.named_parameters():
        assert torch.equal(p, student[n]), n
        assert not torch.equal(p, before[n]), n
