import torch

from medmim.masking.teacher_noise import TeacherNoiseMasker
from medmim.registry import MASKERS


def test_default_ratio_is_the_papers_and_count_is_exact() -> None:
    noise = MASKERS.build("teacher_noise")
    assert isinstance(noise, TeacherNoiseMasker) and noise.ratio == 0.7 and noise.enabled
    out = noise((6, 6, 6), 3)
    assert out.mask.flatten(1).sum(1).tolist() == [152, 152, 152]
    out = noise((12, 12, 4), 2)  # non-cubic: ceil(0.7 * 576) = 404
    assert out.mask.flatten(1).sum(1).tolist() == [404, 404]


def test_ratio_zero_turns_it_off() -> None:
    noise = TeacherNoiseMasker(ratio=0.0)
    assert not noise.enabled
    assert not noise((6, 6, 6), 4).mask.any()


def test_fresh_mask_per_view() -> None:
    noise = TeacherNoiseMasker(ratio=0.7)
    a, b = noise((6, 6, 6), 2).mask, noise((6, 6, 6), 2).mask
    assert not torch.equal(a, b)
