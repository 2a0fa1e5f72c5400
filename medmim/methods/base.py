"""The method contract: the training loop knows nothing about a method beyond this class."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn

from medmim.types import StepOutput, TrainContext

#: The kinds of loss term: scored against the voxels; a cross-entropy against an EMA teacher over
#: K prototypes (its CE starts at ln K: `medmim.train.health`); a prediction of a frozen
#: tokenizer's tokens; a regularizer; an adversarial (GAN) term.
LOSS_KINDS = ("reconstruction", "distillation", "prediction", "regularizer", "adversarial")


class PretrainMethod(nn.Module, ABC):
    """Base of every self-supervised method (SMART, SMIT, iBOT, AttMask, MST, PUMIT, ...).

    A method owns its student (trained), its teacher (EMA, if any), heads, maskers and losses.
    Everything it needs to resume exactly (teacher weights, loss centers) lives in its
    `state_dict` as parameters or buffers.

    Args:
        context: run facts for schedules expressed in epochs.
    """

    #: the name under which the exported encoder's JSON records the method.
    method_name: str = "method"
    #: what each logged `loss/<term>` is, one of `LOSS_KINDS`, e.g. {"amip": "reconstruction"};
    #: reports read it through the registry (`METHODS.get(name).loss_terms`), never by name.
    loss_terms: ClassVar[dict[str, str]] = {}

    def __init__(self, context: TrainContext | None = None) -> None:
        super().__init__()
        self.context = context or TrainContext()

    @abstractmethod
    def forward(self, batch: dict[str, Any], step: int) -> StepOutput:
        """Compute the loss of one batch at optimizer step `step` (0-based)."""

    def frozen_parameters(self, step: int) -> Sequence[nn.Parameter]:
        """Parameters that optimizer step `step` must leave as they are: the loop drops their
        gradients after the backward pass, so AdamW skips them (no update, no weight decay).
        Default: none. Must not read tensors back from the device (the loop calls it every step).
        """
        return ()

    def on_optimizer_step(self, step: int) -> None:
        """Called after each optimizer step (EMA teacher update). Default: nothing."""

    def on_encoder_loaded(self) -> None:
        """Called after `init_from` loaded pretrained weights into `encoder`.

        Methods with an EMA teacher copy the student into the teacher here, so a run started
        from pretrained weights never distils from a random teacher.
        """

    @property
    @abstractmethod
    def encoder(self) -> nn.Module:
        """The student backbone that `medmim export` writes."""

    def encoder_config(self) -> dict[str, Any]:
        """Architecture options of `encoder` (recorded in `encoder.json`)."""
        return getattr(self.encoder, "config", {})
