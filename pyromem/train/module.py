"""A Lightning module that trains a Pyro model and guide by stochastic variational inference."""

import lightning
import pyro
import pyro.distributions
import pyro.infer
import pyro.poutine
import torch

from pyromem.train.seeding import reseed_epoch

#: Key of pyromem's own entries in a Lightning checkpoint.
CHECKPOINT_KEY = "pyromem"

# Pyro's jit-compiled ELBOs look parameters up in the global param store, which
# module-local parameters bypass: they would fail with a KeyError on the first step.
_JIT_ELBOS = (
    pyro.infer.JitTrace_ELBO,
    pyro.infer.JitTraceEnum_ELBO,
    pyro.infer.JitTraceGraph_ELBO,
    pyro.infer.JitTraceMeanField_ELBO,
)


class SVIModule(lightning.LightningModule):
    """Train ``model.model`` / ``model.guide`` by minimising a Pyro ELBO loss.

    This is the pattern of Pyro's Lightning example: ``elbo(model.model, model.guide)``
    is an ``nn.Module`` whose loss a torch optimiser minimises over the model's
    own parameters, so Lightning and DDP train it like any torch module, with
    Pyro's global parameter store or with ``module_local_params``.

    The training loss is ``elbo.differentiable_loss(x, num_data=num_data) / num_data``:
    the model's ``pyro.plate("data", num_data)`` over the batch makes the
    ELBO loss an unbiased estimate for the whole dataset, and dividing by
    ``num_data`` makes it (and the logged ``train_elbo_nats``) per datapoint.

    Every training epoch starts from torch/pyro/numpy/random seeds derived from
    ``(seed, epoch, global_rank)``, so a resumed run retraces an uninterrupted
    one. Pyro validation is off while training (it costs time on every step)
    and restored afterwards.

    :param model: a :class:`~pyro.nn.PyroModule` with methods ``model(x, num_data=None)``
        and ``guide(x, num_data=None)``; ``x`` has shape ``[B, ...]``.
    :param int num_data: size N of the training set.
    :param elbo: a Pyro ELBO instance (default :class:`~pyro.infer.Trace_ELBO`)
        with ``differentiable_loss``, e.g. ``TraceMeanField_ELBO``,
        ``TraceGraph_ELBO``, ``TraceEnum_ELBO``, ``JitTrace_ELBO``. The ``Jit*``
        ELBOs read parameters from Pyro's global param store, so they need a model
        that reads every parameter through it, and Pyro's ``module_local_params``
        setting off.
    :param float lr: learning rate.
    :param optimizer: a ``torch.optim.Optimizer`` class, called as
        ``optimizer(parameters, lr=lr)``.
    :param int seed: base seed of the per-epoch reseeding.
    :param dict config: a JSON-able dict stored in every checkpoint (e.g. how to
        rebuild the model).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        num_data: int,
        elbo: pyro.infer.ELBO | None = None,
        *,
        lr: float = 1e-3,
        optimizer: type[torch.optim.Optimizer] = torch.optim.Adam,
        seed: int = 0,
        config: dict | None = None,
    ):
        super().__init__()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model: expected a pyro.nn.PyroModule, got {type(model).__name__}")
        for method in ("model", "guide"):
            if not callable(getattr(model, method, None)):
                raise TypeError(
                    f"model: expected a module with a callable .{method}(x, num_data=None), "
                    f"got {type(model).__name__} without one"
                )
        if isinstance(num_data, bool) or not isinstance(num_data, int) or num_data < 1:
            raise ValueError(f"num_data: expected a positive int, got {num_data!r}")
        if elbo is None:
            elbo = pyro.infer.Trace_ELBO()
        if not callable(getattr(elbo, "differentiable_loss", None)):
            raise TypeError(
                f"elbo: expected a Pyro ELBO with differentiable_loss, got {type(elbo).__name__}"
            )
        if isinstance(elbo, _JIT_ELBOS) and pyro.settings.get("module_local_params"):
            raise TypeError(
                "elbo: expected an ELBO that trains module-local parameters, got "
                f"{type(elbo).__name__}, which reads Pyro's global param store; "
                f"use {type(elbo).__name__.removeprefix('Jit')} instead"
            )
        if not lr > 0:
            raise ValueError(f"lr: expected a positive float, got {lr!r}")
        self.model = model
        self.loss_fn = elbo(model.model, model.guide)
        self.num_data = num_data
        self.lr = lr
        self.optimizer = optimizer
        self.seed = seed
        self.config = {} if config is None else config
        # One dict per completed epoch, filled by the fit engine's metrics callback
        # and carried in checkpoints so a resumed run continues it.
        self.history: list[dict] = []
        self._validation_before: tuple[bool, bool, bool] | None = None

    def training_step(self, batch, batch_idx):
        # Datasets of (image, label) pairs train on the images.
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        loss = self.loss_fn(x, num_data=self.num_data) / self.num_data
        self.log(
            "train_elbo_nats",
            -loss.detach(),
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(x),
            sync_dist=True,
        )
        return loss

    def configure_optimizers(self):
        return self.optimizer(self.parameters(), lr=self.lr)

    def on_train_start(self):
        self._validation_before = (
            pyro.infer.is_validation_enabled(),
            pyro.distributions.is_validation_enabled(),
            pyro.poutine.is_validation_enabled(),
        )
        pyro.enable_validation(False)

    def on_train_epoch_start(self):
        reseed_epoch(self.seed, self.current_epoch, self.global_rank)

    def on_train_end(self):
        self.restore_pyro_validation()

    def restore_pyro_validation(self) -> None:
        """Restore the Pyro validation flags that :meth:`on_train_start` turned off.

        Lightning calls no ``LightningModule`` hook when training stops on an
        exception, so a caller of ``trainer.fit`` should call this in a ``finally``.
        Does nothing if the flags are already restored.
        """
        if self._validation_before is not None:
            infer_on, dist_on, poutine_on = self._validation_before
            pyro.infer.enable_validation(infer_on)
            pyro.distributions.enable_validation(dist_on)
            pyro.poutine.enable_validation(poutine_on)
            self._validation_before = None

    def on_save_checkpoint(self, checkpoint):
        checkpoint[CHECKPOINT_KEY] = {
            "format_version": 1,
            "config": self.config,
            "history": self.history,
            # Checkpoints are written in on_train_epoch_end, where the finished epoch
            # counts as processed but not yet as completed.
            "epochs_completed": self.trainer.fit_loop.epoch_progress.current.processed,
        }

    def on_load_checkpoint(self, checkpoint):
        self.history = list(checkpoint[CHECKPOINT_KEY]["history"])
