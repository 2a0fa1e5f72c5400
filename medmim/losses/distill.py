"""Centred and sharpened cross-entropy for self-distillation (DINO / iBOT / SMIT / SMART).

For a teacher output t and a student output s (logits over K prototypes):

    P_t = softmax((t - c) / tau_t)        (centred, sharpened; no gradient)
    P_s = softmax(s / tau_s)              (SMIT eq. 3, SMART eq. 3)
    CE  = -sum_k P_t[k] log P_s[k]        (SMIT eqs. 2 and 4, SMART eqs. 2, 4, 5)

and the centre follows the teacher: c <- m c + (1 - m) mean(t), m = 0.9, where the mean runs over
the batch (and, for patch tokens, over tokens first), all-reduced across DDP ranks.

One instance per *token family*, each with its own centre: the SA [CLS] (AITD), the pooled
token (GITD / ITD) and the patch tokens (AMPD / MPD). Two entry points:

- `global_loss`: cross-view pairs (teacher view q, student view v != q), CE averaged over the
  batch, then over the pairs (ITD / AITD / GITD). The student may have more views than the
  teacher (DINO multi-crop: the teacher's global views first, then local crops that only the
  student sees): 2 global + L local views give 2 (1 + L) pairs, averaged (DINO divides the sum of
  the terms by their number).
- `patch_loss`: same-view pairs (q == v), CE averaged over the *masked* tokens of each sample
  (masked sum / max(count, 1)), then over the batch, then over the views (MPD / AMPD).

Each call updates the centre from all teacher outputs it was given, after computing the loss
(as iBOT). tau_t follows `medmim.schedules.epoch_warmup`: `warmup_teacher_temp` (0.04) for
`warmup_delay` steps, then over the epochs of `warmup_steps` the values of
`np.linspace(0.04, 0.07, E)`, one per epoch (DINO/iBOT/SMIT: E = 30, so epoch 29 already has
0.07), then `teacher_temp` (0.07); the method computes the steps from epochs (the SMIT code
delays the patch warm-up by 30 epochs).
The centre is a registered buffer (1, K), so it is saved in the method's state_dict.

`centering="sinkhorn"` replaces the centred softmax by Sinkhorn-Knopp targets
(`medmim.losses.sinkhorn`, DINOv2): over the batch of each global view, and over the MASKED
teacher tokens of each view for patch families (DINOv2's iBOT patch loss does the same; the
unmasked tokens do not enter the loss). The centre is then neither used nor updated.

Each call also records, without gradient, `teacher_entropy` of the final targets and `stats`:
`ce` (the loss), `cos_batch` and (`global_loss`) `cos_views` (`medmim.losses.teacher_stats`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from medmim.errors import ConfigError, did_you_mean
from medmim.losses.sinkhorn import sinkhorn_knopp
from medmim.losses.teacher_stats import teacher_health
from medmim.registry import LOSSES
from medmim.schedules import epoch_warmup

#: Rows of the teacher's distributions that `teacher_entropy` averages (a cheap sample).
ENTROPY_ROWS = 1024
#: Teacher target rules: centred softmax (DINO / iBOT / SMIT / SMART) or Sinkhorn-Knopp (DINOv2).
CENTERINGS = ("center", "sinkhorn")


@LOSSES.register("distill")
class DistillationLoss(nn.Module):
    """Centred, sharpened cross-entropy between teacher and student outputs of one token family.

    Args:
        out_dim: K, the number of prototypes (the head's output width).
        student_temp: tau_s (0.1).
        teacher_temp: final tau_t (0.07).
        warmup_teacher_temp: initial tau_t (0.04).
        warmup_steps: steps of the tau_t warm-up (method: warm-up epochs * steps/epoch);
            0 = `teacher_temp` from the first step.
        warmup_delay: steps at `warmup_teacher_temp` before the warm-up starts.
        steps_per_epoch: tau_t changes once per epoch of this many steps during the warm-up
            (the official per-epoch schedule); 1 = every step.
        center_momentum: m of the centre update (0.9).
        centering: "center" (centred softmax, the papers' default) or "sinkhorn" (DINOv2).
        sinkhorn_iterations: Sinkhorn-Knopp rounds (3, DINOv2).

    Example:
        >>> loss = DistillationLoss(out_dim=8192, warmup_steps=30 * 100)
        >>> s = [torch.randn(4, 8192), torch.randn(4, 8192)]
        >>> t = [torch.randn(4, 8192), torch.randn(4, 8192)]
        >>> loss.global_loss(s, t, step=0).shape, loss.center.shape
        (torch.Size([]), torch.Size([1, 8192]))
    """

    center: Tensor

    def __init__(
        self,
        out_dim: int = 8192,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_steps: int = 0,
        warmup_delay: int = 0,
        center_momentum: float = 0.9,
        steps_per_epoch: int = 1,
        centering: str = "center",
        sinkhorn_iterations: int = 3,
    ) -> None:
        super().__init__()
        for name, value in (
            ("student_temp", student_temp),
            ("teacher_temp", teacher_temp),
            ("warmup_teacher_temp", warmup_teacher_temp),
        ):
            if value <= 0:
                raise ConfigError(f"loss option '{name}' must be > 0, got {value}")
        if not 0.0 <= center_momentum <= 1.0:
            raise ConfigError(
                f"loss option 'center_momentum' must lie in [0, 1], got {center_momentum}"
            )
        if centering not in CENTERINGS:
            raise ConfigError(
                f"method.centering='{centering}' is not one of {list(CENTERINGS)}."
                + did_you_mean(centering, CENTERINGS)
            )
        if sinkhorn_iterations < 1:
            raise ConfigError(
                f"loss option 'sinkhorn_iterations' must be >= 1, got {sinkhorn_iterations}"
            )
        self.centering = centering
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.student_temp = float(student_temp)
        self.teacher_temp_final = float(teacher_temp)
        self.warmup_teacher_temp = float(warmup_teacher_temp)
        self.warmup_steps = int(warmup_steps)
        self.warmup_delay = int(warmup_delay)
        if steps_per_epoch < 1:
            raise ConfigError(f"loss option 'steps_per_epoch' must be >= 1, got {steps_per_epoch}")
        self.steps_per_epoch = int(steps_per_epoch)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(1, out_dim))
        #: entropy of the last teacher distribution / ln K (1 = uniform targets), a detached
        #: scalar tensor from at most ENTROPY_ROWS rows; None before the first call.
        self.teacher_entropy: Tensor | None = None
        self.stats: dict[
            str, Tensor
        ] = {}  #: detached `ce`, `cos_batch`, `cos_views` of the last call

    def teacher_temp(self, step: int) -> float:
        """tau_t at optimizer step `step` (a pure function of the step)."""
        return epoch_warmup(
            step,
            self.warmup_steps,
            self.steps_per_epoch,
            self.warmup_teacher_temp,
            self.teacher_temp_final,
            self.warmup_delay,
        )

    @torch.no_grad()
    def teacher_probs(self, teacher: Tensor, step: int) -> Tensor:
        """softmax((t - c) / tau_t) in float32, no gradient: (..., K) -> (..., K).

        With `centering="sinkhorn"`: Sinkhorn-Knopp over all the rows (..., flattened) instead.
        Also records `teacher_entropy`: the mean entropy of (at most `ENTROPY_ROWS` of) these
        distributions divided by ln K. Near 1 the targets are uniform and the loss sits at ln K
        whatever the student does (where DINO-style training starts); it falls as the teacher's
        targets start to tell inputs apart. Near 0 they are one-hot (collapse to one prototype).
        """
        if self.centering == "sinkhorn":
            rows = teacher.reshape(-1, teacher.shape[-1])
            probs = sinkhorn_knopp(rows, self.teacher_temp(step), self.sinkhorn_iterations)
            probs = probs.reshape(teacher.shape)
        else:
            probs = F.softmax((teacher.float() - self.center) / self.teacher_temp(step), dim=-1)
        rows = probs.reshape(-1, probs.shape[-1])[:ENTROPY_ROWS]
        if rows.shape[-1] > 1 and rows.shape[0]:
            entropy = -(rows * rows.clamp_min(1e-12).log()).sum(dim=-1).mean()
            self.teacher_entropy = entropy / math.log(rows.shape[-1])
        return probs

    def cross_entropy(self, student: Tensor, teacher_probs: Tensor) -> Tensor:
        """-sum_k P_t log softmax(s / tau_s), per token: (..., K) -> (...)."""
        log_ps = F.log_softmax(student.float() / self.student_temp, dim=-1)
        return -(teacher_probs * log_ps).sum(dim=-1)

    def global_loss(
        self,
        student: Sequence[Tensor],
        teacher: Sequence[Tensor],
        step: int,
        update_center: bool = True,
    ) -> Tensor:
        """Cross-view CE (ITD, AITD, GITD), averaged over the batch and the view pairs.

        Args:
            student: per view, (B, K) student logits: the teacher's views in the same order,
                then any local views (multi-crop) that only the student saw.
            teacher: per view, (B, K) teacher logits (at least two views).
            step: optimizer step (for tau_t).
            update_center: update the centre from `teacher` after the loss.

        Returns:
            Scalar loss: the mean over the len(teacher) * (len(student) - 1) pairs (q, v != q).
        """
        _check_views(student, teacher, min_views=2, extra_student=True)
        probs = [self.teacher_probs(t, step) for t in teacher]
        terms = [
            self.cross_entropy(s, p).mean()
            for q, p in enumerate(probs)
            for v, s in enumerate(student)
            if v != q
        ]
        loss = torch.stack(terms).mean()
        self.stats = {"ce": loss.detach(), **teacher_health(teacher, paired=True)}
        if update_center:
            self.update_center(teacher)
        return loss

    def patch_loss(
        self,
        student: Sequence[Tensor],
        teacher: Sequence[Tensor],
        masks: Sequence[Tensor],
        step: int,
        update_center: bool = True,
    ) -> Tensor:
        """Same-view CE on masked tokens (MPD, AMPD), eq. 5 averaged per sample, batch and view.

        Args:
            student: per view, (B, N, K) student patch logits.
            teacher: per view, (B, N, K) teacher patch logits.
            masks: per view, (B, N) or (B, d, h, w) bool, True = masked (the student's mask).
            step: optimizer step (for tau_t).
            update_center: update the centre from `teacher` (all tokens) after the loss.
                With Sinkhorn-Knopp the targets come from the masked teacher tokens only.

        Returns:
            Scalar loss; a sample with no masked token contributes 0.
        """
        _check_views(student, teacher, min_views=1)
        if len(masks) != len(student):
            raise ValueError(f"patch_loss got {len(student)} views but {len(masks)} masks")
        terms = []
        for s, t, m in zip(student, teacher, masks):
            m = m.reshape(m.shape[0], -1)
            if m.shape != s.shape[:2]:
                raise ValueError(
                    f"mask {tuple(m.shape)} does not match patch tokens {tuple(s.shape[:2])}"
                )
            ce = self.cross_entropy(s, self._patch_targets(t, m.bool(), step))
            m = m.float()
            terms.append(((ce * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)).mean())
        loss = torch.stack(terms).mean()
        self.stats = {"ce": loss.detach(), **teacher_health(teacher, paired=False)}
        if update_center:
            self.update_center(teacher)
        return loss

    def _patch_targets(self, teacher: Tensor, masked: Tensor, step: int) -> Tensor:
        """(B, N, K) targets: centred softmax of every token, or Sinkhorn-Knopp over the masked
        tokens (`masked` (B, N) bool) with zero targets elsewhere (they are not in the loss).
        """
        if self.centering != "sinkhorn":
            return self.teacher_probs(teacher, step)
        probs = teacher.new_zeros(teacher.shape, dtype=torch.float32)
        probs[masked] = self.teacher_probs(teacher[masked], step)
        return probs

    def forward(
        self,
        student: Sequence[Tensor],
        teacher: Sequence[Tensor],
        step: int,
        masks: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """`patch_loss` when `masks` is given, else `global_loss`."""
        if masks is None:
            return self.global_loss(student, teacher, step)
        return self.patch_loss(student, teacher, masks, step)

    @torch.no_grad()
    def update_center(self, teacher: Sequence[Tensor]) -> None:
        """C <- m c + (1 - m) mean(t), the mean over every token of every view and rank.

        Global outputs (B, K) are averaged over the batch; patch outputs (B, N, K) over tokens,
        then over the batch (iBOT). Under torch.distributed the sums are all-reduced. A no-op
        with Sinkhorn-Knopp targets, which do not use the centre.
        """
        if self.centering == "sinkhorn":
            return
        rows = torch.cat(
            [t.float().reshape(t.shape[0], -1, t.shape[-1]).mean(dim=1) for t in teacher]
        )
        count = rows.new_full((1, 1), float(rows.shape[0]))
        total = torch.cat([rows.sum(dim=0, keepdim=True), count], dim=1)  # one all-reduce
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
        batch_center = total[:, :-1] / total[:, -1:]
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)


def _check_views(
    student: Sequence[Tensor],
    teacher: Sequence[Tensor],
    min_views: int,
    extra_student: bool = False,
) -> None:
    """Views must be lists of equally shaped tensors, as many student views as teacher views
    (or, with `extra_student`, at least as many: the extra ones are local crops).
    """
    if isinstance(student, Tensor) or isinstance(teacher, Tensor):
        raise TypeError("pass the views as a list of tensors, one per view: [view1, view2]")
    too_few = len(student) < len(teacher) if extra_student else len(student) != len(teacher)
    if too_few or len(teacher) < min_views:
        more = " (or more, local crops)" if extra_student else ""
        raise ValueError(
            f"need >= {min_views} teacher views and as many student views{more}, "
            f"got {len(student)} student and {len(teacher)} teacher views"
        )
    for i, s in enumerate(student):
        t = teacher[i] if i < len(teacher) else teacher[0]
        if s.shape != t.shape:
            raise ValueError(f"student {tuple(s.shape)} and teacher {tuple(t.shape)} shapes differ")
