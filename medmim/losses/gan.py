"""Hinge patch-GAN losses with PUMIT's gated generator term (eq. 5) and the discriminator update.

- `L_D = 0.5 [mean relu(1 - D(x)) + mean relu(1 + D(x_hat))]` (x_hat detached);
  generator term `-mean D(x_hat)` with the discriminator frozen.
- Gate (eq. 5's Iverson bracket): the generator term enters with weight `lambda_gan` only while
  `max(ema, last) <= threshold`, where `last` is the latest discriminator loss and `ema` its
  momentum average (`ema <- m ema + (1 - m) L_D`, init 0.1; code: threshold 0.025, m 0.9). The
  discriminator trains every step regardless.

How the discriminator trains inside a single-optimizer engine (`HingeGANLoss`): the engine steps
one optimizer over the method's parameters that require grad, and minimises the *generator* loss;
the discriminator must instead minimise `L_D` with its own AdamW (lr 1e-3). So its parameters are
kept at `requires_grad=False` (the engine's optimizer and DDP never see them, and the generator's
backward flows through D to x_hat without touching them). In the method's forward,
`accumulate()` switches them on only to take `torch.autograd.grad(L_D, D params)` into a private
buffer; the engine's `on_optimizer_step` hook then calls `step()`, which averages the buffer over
micro-batches (gradient accumulation) and over DDP ranks (all-reduce), takes one AdamW step and
updates the gate. Both gradients are taken at the same (G_t, D_t), as in the public code (G step,
then D step on the same, detached reconstruction). The private AdamW keeps its moments in
buffers, so they are saved in the method's `state_dict` as plain tensors and resume is exact.
A micro-batch with a non-finite `L_D` adds nothing, and the method discards a buffer whose
generator step the engine skipped (non-finite loss: no `on_optimizer_step`). Under fp16 autocast
the discriminator update runs in fp32 (it has no gradient scaler); bf16 and fp32 run as set.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """`0.5 [mean relu(1 - D(x)) + mean relu(1 + D(x_hat))]` over patch logits of any shape."""
    return 0.5 * (
        F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()
    )


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    """Generator term `-mean D(x_hat)`."""
    return -fake_logits.float().mean()


def _ddp_world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class GANGate(nn.Module):
    """Switches the generator's GAN term on while the discriminator's loss is small.

    Args:
        threshold: on while max(ema, last) <= threshold (0.025).
        momentum: EMA momentum m (0.9).
        ema_init: initial EMA (0.1); `last` starts at +inf, so the gate starts off.
    """

    def __init__(
        self, threshold: float = 0.025, momentum: float = 0.9, ema_init: float = 0.1
    ) -> None:
        super().__init__()
        self.threshold, self.momentum = float(threshold), float(momentum)
        self.register_buffer("ema", torch.tensor(float(ema_init), dtype=torch.float64))
        self.register_buffer("last", torch.tensor(float("inf"), dtype=torch.float64))

    @property
    def active(self) -> bool:
        """Whether the generator term is on for the next step."""
        return bool(torch.maximum(self.ema, self.last) <= self.threshold)

    def update(self, d_loss: float) -> None:
        """Record the discriminator loss of one step (already averaged over ranks)."""
        self.last.fill_(float(d_loss))
        self.ema.mul_(self.momentum).add_((1.0 - self.momentum) * float(d_loss))


@contextmanager
def _trainable(params: Sequence[nn.Parameter]) -> Iterator[None]:
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(False)


class BufferedAdamW(nn.Module):
    """AdamW (decoupled weight decay on matrices only) whose state lives in buffers.

    Its moments are plain tensors of the owner's `state_dict`, so a checkpoint stays a dict of
    tensors (`torch.load(weights_only=True)`, no optimizer objects) and moves with `.to(device)`.
    The update is `torch.optim.AdamW`'s (tested for parity).

    Args:
        params: the parameters it updates (not registered here; the owner holds them).
        weight_decay: applied to parameters with ndim > 1 (not to biases and norms).
        betas: (beta1, beta2).
        eps: denominator epsilon.
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        weight_decay: float = 0.05,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.params = params
        self.weight_decay, self.betas, self.eps = (
            float(weight_decay),
            (float(betas[0]), float(betas[1])),
            float(eps),
        )
        for i, p in enumerate(params):
            self.register_buffer(
                f"exp_avg_{i}", torch.zeros_like(p, memory_format=torch.preserve_format)
            )
            self.register_buffer(
                f"exp_avg_sq_{i}", torch.zeros_like(p, memory_format=torch.preserve_format)
            )
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor], lr: float) -> None:
        """One AdamW step with gradients `grads` (one per parameter) at learning rate `lr`."""
        self.steps += 1
        t, (b1, b2) = int(self.steps), self.betas
        step_size, bc2_sqrt = lr / (1 - b1**t), (1 - b2**t) ** 0.5
        for i, (p, g) in enumerate(zip(self.params, grads)):
            m, v = getattr(self, f"exp_avg_{i}"), getattr(self, f"exp_avg_sq_{i}")
            if p.ndim > 1 and self.weight_decay:
                p.mul_(1 - lr * self.weight_decay)
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, (v.sqrt() / bc2_sqrt).add_(self.eps), value=-step_size)


class HingeGANLoss(nn.Module):
    """A discriminator with its private optimizer and gate (see the module docstring).

    Args:
        discriminator: maps (image, aniso) to patch logits.
        weight: lambda_gan of the generator term (3e-3).
        threshold, momentum, ema_init: the gate (`GANGate`).
        weight_decay: AdamW weight decay of the discriminator's matrices (0.05).
        betas: AdamW betas.
    """

    def __init__(
        self,
        discriminator: nn.Module,
        weight: float = 3e-3,
        threshold: float = 0.025,
        momentum: float = 0.9,
        ema_init: float = 0.1,
        weight_decay: float = 0.05,
        betas: Sequence[float] = (0.9, 0.999),
    ) -> None:
        super().__init__()
        self.discriminator = discriminator.requires_grad_(False)
        self.weight = float(weight)
        self.gate = GANGate(threshold, momentum, ema_init)
        self.optimizer = BufferedAdamW(list(self.discriminator.parameters()), weight_decay, betas)
        self._grad_sum: list[Tensor] | None = None
        self._loss_sum, self._count = 0.0, 0

    def generator_loss(self, fake: Tensor, *args: Any) -> tuple[Tensor, float]:
        """The generator term `-mean D(x_hat)` (D frozen) and its weight now (0 while gated off)."""
        g = hinge_generator_loss(self.discriminator(fake, *args))
        return g, (self.weight if self.gate.active else 0.0)

    def accumulate(self, real: Tensor, fake: Tensor, *args: Any) -> Tensor:
        """Discriminator loss on (real, detached fake); its gradient goes to a private buffer.

        Returns:
            L_D (0-d, detached).
        """
        params = list(self.discriminator.parameters())
        device = real.device.type
        fp16 = (
            torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.float16
        )
        precision = torch.autocast(device, enabled=False) if fp16 else nullcontext()
        with _trainable(params), precision:
            real_in, fake_in = (
                (real.detach().float(), fake.detach().float())
                if fp16
                else (real.detach(), fake.detach())
            )
            real_logits, fake_logits = self.discriminator(
                torch.cat([real_in, fake_in]), *args
            ).chunk(2)
            d_loss = hinge_discriminator_loss(
                real_logits, fake_logits
            )  # one pass: GroupNorm is per sample
            grads = torch.autograd.grad(d_loss, params)
        d_loss = d_loss.detach()
        if torch.isfinite(d_loss):
            if self._grad_sum is None:
                self._grad_sum = [g.detach().clone() for g in grads]
            else:
                for acc, g in zip(self._grad_sum, grads):
                    acc.add_(g)
            self._loss_sum += float(d_loss)
            self._count += 1
        return d_loss

    def discard(self) -> None:
        """Drop the accumulated gradient (its generator step was skipped as non-finite)."""
        self._grad_sum, self._loss_sum, self._count = None, 0.0, 0

    def step(self, lr: float) -> float | None:
        """Apply the accumulated discriminator gradient (mean over micro-batches and ranks).

        Every rank must call this at the same step (it all-reduces). Returns the mean L_D of the
        step, or None if no finite micro-batch was accumulated on any rank.
        """
        params = list(self.discriminator.parameters())
        stats = torch.tensor(
            [self._loss_sum, float(self._count)], dtype=torch.float64, device=params[0].device
        )
        grads = self._grad_sum or [torch.zeros_like(p) for p in params]
        if _ddp_world() > 1:
            dist.all_reduce(stats)
            for g in grads:
                dist.all_reduce(g)
        self.discard()
        if stats[1] == 0:
            return None
        self.optimizer.step([g / stats[1].to(g.dtype) for g in grads], lr)
        d_loss = float(stats[0] / stats[1])
        self.gate.update(d_loss)
        return d_loss
