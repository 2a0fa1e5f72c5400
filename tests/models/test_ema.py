import torch
from monai.networks.layers import DropPath
from torch import nn

from medmim.heads.projection import ProjectionHead
from medmim.models.ema import EMATeacher, disable_drop_path


class Block(nn.Module):
    """A block with a MONAI DropPath module and a float drop-path probability."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.drop_path = DropPath(0.5)
        self.drop_path_rate = 0.3
        self.register_buffer("steps", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.fc(x))

    def extra_method(self) -> str:
        return "student api"


def make_student() -> nn.ModuleDict:
    return nn.ModuleDict({"backbone": Block(), "head": ProjectionHead(6, 8, 12, 4)})


def test_teacher_equals_student_at_step_0_and_is_frozen_eval() -> None:
    student = make_student()
    teacher = EMATeacher(student)
    s_state, t_state = student.state_dict(), teacher.state_dict()
    assert set(t_state) == {f"module.{k}" for k in s_state}
    assert all(torch.equal(s_state[k], t_state[f"module.{k}"]) for k in s_state)
    assert not any(p.requires_grad for p in teacher.parameters())
    parent = nn.ModuleDict({"student": student, "teacher": teacher}).train()
    assert parent.training and not teacher.training and not teacher.module.training
    assert not any(m.training for m in teacher.modules())


def test_drop_path_is_disabled() -> None:
    student = make_student()
    teacher = EMATeacher(student)
    block = teacher["backbone"]
    assert block.drop_path.drop_prob == 0.0 and block.drop_path_rate == 0.0
    assert student["backbone"].drop_path.drop_prob == 0.5  # the student is untouched
    teacher.module.train()  # even forced into train mode the teacher is deterministic
    x = torch.randn(64, 6)
    assert torch.equal(block(x), block(x))
    assert disable_drop_path(nn.Linear(2, 2)) == 0


def test_update_moves_teacher_toward_student_and_copies_buffers() -> None:
    student = make_student()
    teacher = EMATeacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student["backbone"].steps.fill_(7)
    before = {n: p.clone() for n, p in teacher.module.named_parameters()}
    teacher.update(student, 0.9)
    s_params = dict(student.named_parameters())
    for name, p in teacher.module.named_parameters():
        assert torch.allclose(p, 0.9 * before[name] + 0.1 * s_params[name], atol=1e-6)
        dist_before = (before[name] - s_params[name]).norm()
        assert (p - s_params[name]).norm() <= dist_before
    assert teacher["backbone"].steps.item() == 7
    frozen = {n: p.clone() for n, p in teacher.module.named_parameters()}
    teacher.update(student, 1.0)
    assert all(torch.equal(p, frozen[n]) for n, p in teacher.module.named_parameters())


def test_gradients_reach_only_the_student_and_api_passes_through() -> None:
    student = make_student()
    teacher = EMATeacher(student)
    x = torch.randn(4, 6)
    s_feat, t_feat = student["backbone"](x), teacher["backbone"](x)
    s_out = student["head"](s_feat) + student["head"](s_feat, tokens="patch")
    t_out = teacher["head"](t_feat) + teacher["head"](t_feat, tokens="patch")
    (s_out * t_out.softmax(-1)).sum().backward()
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    assert all(p.grad is None for p in teacher.parameters())
    assert EMATeacher(Block()).extra_method() == "student api"
    assert torch.equal(EMATeacher(nn.Identity())(x), x)
