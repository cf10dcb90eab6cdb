"""The divergence guard: a non-finite loss or gradient stops training before the step.

A learning rate that is too high, or data outside the likelihood's support,
turn the ELBO loss or its gradient into ``inf`` or ``nan``; one optimiser step
with them makes every parameter ``nan``. The guard checks both before each
optimiser step (one device-to-host sync per step), so the parameters stay those
of the last good step and the last checkpoint on disk that of the last good epoch,
and stops with one line that names the epoch, the step and the likely cause. A
gradient whose norm overflows (beyond 1.8e19 in float32) counts as diverged too.

The parameters are checked before each checkpoint, through their sums: a sum
is finite when every element is, and ``inf`` or ``nan`` when one is not,
except that finite values can overflow when they add up beyond the dtype's
range; so a sum that is not finite is confirmed element by element.
"""

import torch
from lightning.pytorch.callbacks import Callback


class TrainingDiverged(ArithmeticError):
    """Training met a non-finite loss, gradient or parameter; the run stopped."""


def _kept(trainer) -> str:
    """What the run leaves on disk: the last good checkpoint, or none when it diverged before
    its first save (the first epoch of a run that does not resume)."""
    for callback in getattr(trainer, "checkpoint_callbacks", []):
        # pyromem.train.checkpoint.LastCheckpoint: the epochs its file holds for this run
        saved = getattr(callback, "epochs_saved", 0)
        if saved:
            return f"the last good checkpoint, {callback.path}, is kept ({saved} epochs)"
    return "no checkpoint was written, since no epoch was completed"


def _cause(trainer, pl_module) -> str:
    return (
        f"likely a learning rate too high (lr={pl_module.lr:g}) or data outside the "
        f"likelihood's support; {_kept(trainer)}"
    )


class DivergenceGuard(Callback):
    """Raise :class:`TrainingDiverged` before an optimiser step with a non-finite loss or
    gradient. :class:`~pyromem.train.SVIModule` keeps the step's loss in ``last_loss``."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        grads = [g for g in grads if g is not None]
        loss = pl_module.last_loss
        # one finiteness test and one sync for the loss and every gradient together
        total = torch.stack(torch._foreach_norm(grads)).sum() if grads else None
        if loss is not None:
            total = loss if total is None else total + loss
        if total is None or torch.isfinite(total):
            return
        where = f"epoch {trainer.current_epoch + 1}, step {trainer.global_step + 1}"
        if loss is not None and not torch.isfinite(loss):
            what = f"the loss is {loss.item()}"
        else:
            what = "the gradient's norm is not finite"
        raise TrainingDiverged(
            f"training diverged at {where}: {what}; {_cause(trainer, pl_module)}"
        )


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite, with one device-to-host sync
    (and one per tensor only when their sums are not finite): the sums read each
    tensor once, where ``torch.isfinite(t).all()`` costs about 20 times as much on a CPU."""
    if not tensors:
        return True
    if torch.isfinite(torch.stack([t.sum() for t in tensors]).sum()):
        return True
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def check_finite_parameters(module, epoch, trainer=None) -> None:
    """Raise :class:`TrainingDiverged` if a parameter of ``module`` is not finite."""
    named = list(module.named_parameters())
    if all_finite([parameter.detach() for _, parameter in named]):
        return
    name = next(name for name, parameter in named if not torch.isfinite(parameter).all())
    raise TrainingDiverged(
        f"training diverged in epoch {epoch}: parameter {name} is not finite; "
        + (_kept(trainer) if trainer is not None else "the last good checkpoint is kept")
    )
