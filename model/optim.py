"""Adam, computed exactly as torch.optim.Adam computes it with its defaults (betas 0.9 and 0.999, eps 1e-8,
no amsgrad), in a few foreach tensor operations, with a learning rate set per step. A weight decay, when given,
is decoupled as in AdamW: the weights shrink by lr * weight_decay before each update.

Why not torch.optim: its first use imports torch._dynamo, 1 to 2 s of process start on the 2-core CPU, which
is longer than a whole default training run on the seed's copy task. tests/model/test_optim.py checks that
both give the same weights.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class Adam:
    def __init__(self, params: Iterable[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float | None = None) -> None:
        """One update with the gradients in .grad (the optimizer's lr unless one is given for this step)."""
        lr = self.lr if lr is None else lr
        self.steps += 1
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        params = [self.params[i] for i in live]
        grads = [g for i in live if (g := self.params[i].grad) is not None]
        exp_avg = [self.exp_avg[i] for i in live]
        exp_avg_sq = [self.exp_avg_sq[i] for i in live]
        torch._foreach_lerp_(exp_avg, grads, 1 - self.beta1)
        torch._foreach_mul_(exp_avg_sq, self.beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, 1 - self.beta2)
        bias_correction1 = 1 - self.beta1 ** self.steps
        bias_correction2 = 1 - self.beta2 ** self.steps
        if self.weight_decay:
            torch._foreach_mul_(params, 1 - lr * self.weight_decay)
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, bias_correction2 ** 0.5)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, exp_avg, denom, -lr / bias_correction1)
