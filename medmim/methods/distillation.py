"""The self-distillation base of SMART, SMIT, iBOT, AttMask, MST and SMART-ViT, and its parts.

- `SelfDistillation`: see below; `HeadSpec` names one of its projection heads.
- `LossTerms`: the weighted sum of a method's named loss terms.
- `backbone_with`: a backbone build spec with a method's ablation switches written in (e.g.
  SMART's `gitd_stage`), refusing a switch the backbone does not have or a clash with the model
  section, so a switch never passes silently.
- `SelfDistillation`: the student (backbone + projection heads + student-only parts such as the
  MIP head), its EMA teacher (backbone + heads, a copy at step 0, updated after each optimizer
  step with momentum 0.996 -> 1 on a cosine per iteration), one `DistillationLoss` (own centre)
  per token family, the two views concatenated into one batch, and the loss bookkeeping; it
  owns the options (and defaults) of the heads, temperatures and EMA that the methods share.

The views of a batch run as one concatenated batch (V*B, C, D, H, W) through each network: view
v is rows [v*B, (v+1)*B). `chunk(V)` splits any per-row result back into views.

Collapse guards shared by every method (options of `SelfDistillation`): Sinkhorn-Knopp teacher
targets (`centering`), the KoLeo regulariser (`koleo_weight`, `loss/koleo`), DINO multi-crop
(`batch["local_views"]`: smaller crops that only the student sees, unmasked, which join the
cross-view losses as extra student views) and the health statistics in `log_common`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from medmim.errors import ConfigError
from medmim.heads.mip import MIPHead
from medmim.heads.projection import ProjectionHead
from medmim.losses.distill import DistillationLoss
from medmim.losses.koleo import KoLeoLoss
from medmim.losses.masked_l1 import MaskedL1Loss
from medmim.masking.utils import mask_to_voxels
from medmim.methods.base import PretrainMethod
from medmim.models.ema import EMATeacher
from medmim.registry import BACKBONES
from medmim.schedules import ema_momentum
from medmim.types import Features, TrainContext


def backbone_with(
    spec: Mapping[str, Any], method: str, switches: Mapping[str, tuple[str, Any]], hint: str = ""
) -> dict[str, Any]:
    """`spec` with the method's backbone switches set; a switch whose value is None is left alone.

    Args:
        spec: BACKBONES build spec from the config's `model` section.
        method: the method's name, for error messages.
        switches: method option -> (backbone option, value), e.g. {"gitd_stage": ("pool_stage", 4)}.
        hint: appended to the error for a backbone without the option.

    Raises:
        ConfigError: the backbone has no such option, or the model section sets it differently.
    """
    spec = dict(spec)
    factory = BACKBONES.get(str(spec.get("name")))
    params = inspect.signature(getattr(factory, "base", factory)).parameters
    for option, (key, value) in switches.items():
        if value is None:
            continue
        if key not in params:
            raise ConfigError(
                f"method.{option}={value} sets the backbone option '{key}', which backbone "
                f"'{spec['name']}' does not have; set method.{option}=null or use a Swin backbone. "
                f"{hint}".strip()
            )
        if key in spec and spec[key] != value:
            raise ConfigError(
                f"model.{key}={spec[key]} clashes with method.{option}={value} of method "
                f"'{method}'; set it once, in the method section"
            )
        spec[key] = value
    return spec


def views_of(batch: Mapping[str, Any]) -> tuple[Tensor, int]:
    """The batch's views concatenated: (V*B, C, D, H, W), and V (at least 2)."""
    views = batch["views"]
    if isinstance(views, Tensor) or len(views) < 2:
        raise ValueError(
            "self-distillation needs batch['views'] = a list of at least 2 (B, C, D, H, W) views"
        )
    return torch.cat(list(views), dim=0), len(views)


def local_views_of(batch: Mapping[str, Any], batch_size: int) -> Tensor | None:
    """`batch["local_views"]` (DINO multi-crop) concatenated: (L*B, C, d, h, w), or
    None if absent.
    """
    local = batch.get("local_views")
    if local is None or len(local) == 0:
        return None
    if isinstance(local, Tensor) or any(v.shape != local[0].shape for v in local):
        raise ValueError(
            "batch['local_views'] must be a list of equally shaped (B, C, d, h, w) crops"
        )
    if len(local[0]) != batch_size:
        raise ValueError(
            f"batch['local_views'] holds {len(local[0])} samples per crop, the views {batch_size}"
        )
    return torch.cat(list(local), dim=0)


@dataclass(frozen=True)
class HeadSpec:
    """One projection head of a `SelfDistillation` method (a `ProjectionHead`).

    Attributes:
        in_dim: width of the backbone tokens it reads.
        share_last_layer: one last layer for global and patch tokens (iBOT's shared head);
            False gives patch tokens their own (`last_layer_patch`).
    """

    in_dim: int
    share_last_layer: bool = False


class LossTerms:
    """The weighted sum of named loss terms; a term of weight 0 is not even computed.

    Example:
        >>> terms = LossTerms()
        >>> terms.add("mip", 1.0, lambda: torch.tensor(2.0))
        >>> terms.add("itd", 0.0, lambda: 1 / 0)   # skipped
        >>> float(terms.total), list(terms.logs)
        (2.0, ['loss/mip'])
    """

    def __init__(self) -> None:
        self.total: Tensor | float = 0.0
        self.logs: dict[str, Any] = {}

    def add(self, name: str, weight: float, value: Tensor | Callable[[], Tensor]) -> None:
        """Total += weight * value (a tensor, or a callable run only if weight != 0), logged as
        `loss/<name>` (unweighted).
        """
        if weight == 0:
            return
        value = value() if callable(value) else value
        self.total = self.total + weight * value
        self.logs[f"loss/{name}"] = value.detach()


class SelfDistillation(PretrainMethod):
    """Student/teacher pair with projection heads, EMA update and centred distillation losses.

    The keyword options after `context` are those every self-distillation method shares, with
    the defaults of SMIT / SMART / iBOT; a method's `__init__` takes its own options and passes
    `**distill` on, which `METHODS.build` checks against these names.

    Args:
        backbone: the student backbone (the teacher gets a copy).
        heads: name -> `HeadSpec` of each `ProjectionHead`, built here and copied to the teacher.
        student_only: student parts the teacher does not need (the MIP head).
        families: token families, each with its own `DistillationLoss` and centre.
        context: run facts (steps per epoch, total steps).
        out_dim, hidden_dim, bottleneck_dim, norm_last_layer: the projection heads (K = 8192,
            2048, 256, frozen weight-norm magnitude).
        student_temp, teacher_temp, warmup_teacher_temp, teacher_temp_warmup_epochs: tau_s 0.1,
            tau_t 0.04 -> 0.07 over 30 epochs, one value per epoch as `np.linspace(0.04, 0.07,
            30)` (`DistillationLoss`; the warm-up in epochs).
        center_momentum: 0.9.
        momentum_start, momentum_end: the teacher's EMA momentum, cosine 0.996 -> 1 per step.
        centering: teacher targets, "center" (centred softmax, the papers') or "sinkhorn"
            (Sinkhorn-Knopp, DINOv2; see `medmim.losses.distill`).
        koleo_weight: weight of the KoLeo regulariser on the student's backbone embedding of
            each global view, summed over the views (DINOv2: 0.1 on the [CLS]); 0 = off.
        koleo_token: its token: "cls", "pooled", or "auto" (the [CLS] if the backbone has one).
    """

    def __init__(
        self,
        backbone: nn.Module,
        heads: Mapping[str, HeadSpec],
        student_only: Mapping[str, nn.Module],
        families: tuple[str, ...],
        context: TrainContext | None,
        /,
        *,
        out_dim: int = 8192,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        norm_last_layer: bool = True,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        teacher_temp_warmup_epochs: float = 30.0,
        center_momentum: float = 0.9,
        momentum_start: float = 0.996,
        momentum_end: float = 1.0,
        centering: str = "center",
        koleo_weight: float = 0.0,
        koleo_token: str = "auto",
    ) -> None:
        super().__init__(context)
        head = {
            "out_dim": out_dim,
            "hidden_dim": hidden_dim,
            "bottleneck_dim": bottleneck_dim,
            "norm_last_layer": norm_last_layer,
        }
        projections = {
            name: ProjectionHead(spec.in_dim, share_last_layer=spec.share_last_layer, **head)
            for name, spec in heads.items()
        }
        self.student = nn.ModuleDict({"backbone": backbone, **projections, **student_only})
        self.head_names = tuple(projections)
        self.teacher = EMATeacher(nn.ModuleDict({"backbone": backbone, **projections}))
        warmup = round(float(teacher_temp_warmup_epochs) * self.context.steps_per_epoch)
        self.losses = nn.ModuleDict(
            {
                f: DistillationLoss(
                    out_dim=out_dim,
                    student_temp=student_temp,
                    teacher_temp=teacher_temp,
                    warmup_teacher_temp=warmup_teacher_temp,
                    warmup_steps=warmup,
                    steps_per_epoch=self.context.steps_per_epoch,
                    center_momentum=center_momentum,
                    centering=centering,
                )
                for f in families
            }
        )
        self.momentum = (float(momentum_start), float(momentum_end))
        self.koleo_weight = float(koleo_weight)
        self.koleo_token = _koleo_token(koleo_token, backbone.has_cls_attention)
        self.koleo_loss = KoLeoLoss()

    @property
    def encoder(self) -> nn.Module:
        """The student backbone (what `medmim export` writes)."""
        return self.student["backbone"]

    def momentum_at(self, step: int) -> float:
        """EMA momentum used after optimizer step `step`."""
        return ema_momentum(step, self.context.total_steps, *self.momentum)

    def frozen_parameters(self, step: int) -> Sequence[nn.Parameter]:
        """The student heads' last layers during the first `context.freeze_last_layer_steps`
        steps (DINO's `cancel_gradients_last_layer`, `optim.freeze_last_layer_epochs`).
        """
        if step >= self.context.freeze_last_layer_steps:
            return ()
        return [p for name in self.head_names for p in self.student[name].last_layer_parameters()]

    def on_optimizer_step(self, step: int) -> None:
        """theta_t <- m theta_t + (1 - m) theta_s over the names the teacher holds."""
        self.teacher.update(self.student, self.momentum_at(step))

    def on_encoder_loaded(self) -> None:
        """After `init_from`: the teacher starts as a copy of the pretrained student
        (momentum 0).
        """
        self.teacher.update(self.student, 0.0)

    @torch.no_grad()
    def teacher_features(self, x: Tensor, mask: Tensor | None = None) -> Features:
        """The teacher backbone's features of `x` (no gradient), `mask` replaced by
        ITS mask token.
        """
        return self.teacher["backbone"](x, mask)

    def local_features(self, batch: Mapping[str, Any], batch_size: int) -> Features:
        """The student backbone's features of the batch's local crops (unmasked), {} if none.

        Raises:
            ConfigError: the backbone cannot take crops of that size (the message says which).
        """
        x = local_views_of(batch, batch_size)
        if x is None:
            return {}
        try:
            self.encoder.mask_grid(x.shape)
        except ValueError as err:
            raise ConfigError(
                f"local crops {tuple(x.shape[-3:])} do not fit the backbone: {err}. Set the data "
                f"section's local crop size to such a multiple, or turn the local views off"
            ) from err
        return self.student["backbone"](x)

    def global_distillation(
        self,
        family: str,
        head: str,
        student: Tensor,
        teacher: Tensor,
        views: int,
        step: int,
        local: Tensor | None = None,
    ) -> Tensor:
        """Cross-view CE of global tokens (ITD / AITD / GITD): (V*B, C) student and teacher tokens,
        and optionally (L*B, C) student tokens of L local crops (extra student views).
        """
        if local is None:
            s = self.student[head](student).chunk(views)
        else:
            crops = views + len(local) // (len(student) // views)
            s = self.student[head](torch.cat([student, local])).chunk(crops)
        with torch.no_grad():
            t = self.teacher[head](teacher).chunk(views)
        return self.losses[family].global_loss(list(s), list(t), step)

    def patch_distillation(
        self,
        family: str,
        head: str,
        student: Tensor,
        teacher: Tensor,
        mask: Tensor,
        views: int,
        step: int,
    ) -> Tensor:
        """Same-view CE over masked patch tokens (MPD / AMPD): (V*B, N, C) tokens,
        (V*B, d, h, w) mask.

        The student's head runs on the masked tokens only (the loss reads nothing else); the
        teacher's on all tokens, which the centre update averages.
        """
        flat = mask.flatten(1)
        masked = self.student[head](student[flat], tokens="patch")  # (M, K)
        s = masked.new_zeros(*flat.shape, masked.shape[-1]).index_put((flat,), masked)
        with torch.no_grad():
            t = self.teacher[head](teacher, tokens="patch").chunk(views)
        return self.losses[family].patch_loss(
            list(s.chunk(views)), list(t), list(mask.chunk(views)), step
        )

    def koleo(self, student: Features, views: int) -> Tensor:
        """KoLeo of the student's `koleo_token` (V*B, C), summed over the V global
        views (DINOv2).
        """
        return sum(self.koleo_loss(z) for z in student[self.koleo_token].chunk(views))

    def log_common(self, step: int, mask: Tensor, hints: Tensor | None) -> dict[str, Any]:
        """Masking, teacher and distillation health logs of the step.

        Keys: mask/ratio (fraction masked), mask/hints (fraction revealed), teacher/momentum,
        teacher/temp, distill/ln_k (ln K, the CE of uniform targets); per token family f whose
        loss ran: teacher/entropy/<f> (target entropy / ln K, 1 = uniform), distill/ce/<f> (its
        unweighted CE), teacher/cos_batch/<f> (mean cosine of the teacher's logits between
        different samples of a view, patch logits averaged over tokens; ~1 = collapse; absent
        for B = 1) and, for global families, teacher/cos_views/<f> (between views 1 and 2 of
        the same sample; learning = clearly above cos_batch).
        """
        logs: dict[str, Any] = {"mask/ratio": mask.float().mean().detach()}
        if hints is not None:
            logs["mask/hints"] = hints.float().mean().detach()
        logs["teacher/momentum"] = self.momentum_at(step)
        first = next(iter(self.losses.values()))
        logs["teacher/temp"] = first.teacher_temp(step)
        logs["distill/ln_k"] = math.log(first.center.shape[-1])
        for family, loss in self.losses.items():
            if loss.teacher_entropy is not None:
                logs[f"teacher/entropy/{family}"] = loss.teacher_entropy
            for key, value in loss.stats.items():
                logs[f"distill/ce/{family}" if key == "ce" else f"teacher/{key}/{family}"] = value
        return logs


def _koleo_token(token: str, has_cls: bool) -> str:
    """The backbone feature KoLeo reads: "auto" -> "cls" if the backbone has one, else "pooled"."""
    if token not in ("auto", "cls", "pooled"):
        raise ConfigError(f"method.koleo_token='{token}' is not one of ['auto', 'cls', 'pooled']")
    if token == "cls" and not has_cls:
        raise ConfigError(
            "method.koleo_token=cls needs a backbone with a [CLS]; use koleo_token=pooled"
        )
    return ("cls" if has_cls else "pooled") if token == "auto" else token


def mip_heads(backbone: nn.Module) -> dict[str, nn.Module]:
    """The student-only (A)MIP head: bottleneck -> voxels (1x1x1 conv + pixel shuffle)."""
    dims = backbone.feature_dims
    return {"mip": MIPHead(dims["bottleneck"], backbone.in_channels, backbone.bottleneck_stride)}


def masked_reconstruction(
    mip: nn.Module, loss: MaskedL1Loss, bottleneck: Tensor, x: Tensor, mask: Tensor
) -> tuple[Tensor, Tensor]:
    """(A)MIP, SMIT eq. 1 / SMART eq. 6: L1 over the masked voxels of the reconstruction.

    Returns:
        The loss and the reconstruction (V*B, C, D, H, W).
    """
    recon = mip(bottleneck)
    return loss(recon, x, mask_to_voxels(mask, x.shape[-3:])), recon


def visuals(
    x: Tensor, mask: Tensor, recon: Tensor | None = None, attn: Tensor | None = None
) -> dict[str, Tensor]:
    """Detached (D, H, W) volumes of the first sample of view 1 for the progress figure.

    Args:
        x: (V*B, C, D, H, W) views.
        mask: (V*B, d, h, w) token mask, shown upsampled to (D, H, W).
        recon: like x, or None.
        attn: (V*B, N) teacher SATT with N = d*h*w, or None.

    Returns:
        "view" and "mask", plus "recon" and "attn" when given.
    """
    size = x.shape[-3:]
    out = {"view": x[0, 0].detach(), "mask": mask_to_voxels(mask[:1].float(), size)[0, 0]}
    if recon is not None:
        out["recon"] = recon[0, 0].detach().float()
    if attn is not None:
        out["attn"] = mask_to_voxels(attn[:1].detach().float().reshape(1, *mask.shape[1:]), size)[
            0, 0
        ]
    return out
