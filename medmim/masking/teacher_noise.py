"""The noisy teacher's patch drop (SMART, Jiang et al. 2024, section 3.4).

SMART corrupts the teacher's inputs with patch dropout at ratio rho = 0.7: u_hat = m_u * u. On a
Swin, dropping tokens does not fit windowed attention, so (as the public SMART code does) a
dropped cell is *replaced* by the teacher's own (EMA) mask token instead. A cell of the masking
grid is a block (16^3 voxels = 8^3 patch-embedding tokens for the Swin p2 grid), so the teacher is
corrupted in blocks. The backbone does the replacement given this mask; the masker only chooses
the cells: exactly `num_masked(ratio, N)` random cells per sample, drawn anew per view.

`ratio = 0` turns the noise off (`enabled` is False, the mask is all False): the SMIT setting,
and the public SMART code's CT path, which hard-codes a teacher ratio of 0 (its CLI default 0.3).
"""

from __future__ import annotations

from medmim.masking.random import RandomMasker
from medmim.registry import MASKERS


@MASKERS.register("teacher_noise")
class TeacherNoiseMasker(RandomMasker):
    """Random block replacement for the teacher's inputs (the "noisy teacher").

    Args:
        ratio: patch-drop ratio rho in [0, 1] (paper: 0.7; 0 = off).
        rounding: "ceil" (default, as the SMART code's mask generator), "floor" or "round".

    Example:
        >>> noise = TeacherNoiseMasker(ratio=0.7)
        >>> out = noise((6, 6, 6), batch_size=2)   # then: teacher(x, mask=out.mask)
        >>> int(out.mask[1].sum())
        152
        >>> TeacherNoiseMasker(ratio=0.0).enabled
        False
    """

    def __init__(self, ratio: float = 0.7, rounding: str = "ceil") -> None:
        super().__init__(ratio=ratio, rounding=rounding)

    @property
    def enabled(self) -> bool:
        """False when the ratio is 0: the method may then skip the mask (pass `mask=None`)."""
        return self.ratio > 0.0
