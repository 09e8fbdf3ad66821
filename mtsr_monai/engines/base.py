"""What the three adversarial trainers share (paired, BicycleGAN, CycleGAN): precision, GradScalers, the
``(input, target)`` batch, network freezing, multi-scale GAN sums, resume objects and multi-process helpers.

Each trainer subclasses :class:`AdversarialTrainerBase` and writes its own ``_iteration`` (with the
steps it calls).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from monai.engines import Trainer
from torch.optim import Optimizer

from mtsr_monai.engines.handlers import PrepareBatchPair
from mtsr_monai.errors import InputError
from mtsr_monai.losses.gan import GanLoss
from mtsr_monai.precision import autocast, resolve_precision


def training_precision(amp: bool, precision: str | None, device: str | torch.device) -> str:
    """The resolved precision of a trainer: ``precision`` if given (``auto``: bf16 on a CPU that has it,
    fp16 on CUDA), else ``auto`` when ``amp`` and fp32 when not (the flag of earlier configs)."""
    return resolve_precision(precision or ("auto" if amp else "fp32"), device)


def grad_scaler(precision: str, device: str | torch.device) -> torch.amp.GradScaler:
    """A GradScaler that scales only for fp16 on CUDA (bf16 keeps fp32's exponent range: a no-op scaler)."""
    return torch.amp.GradScaler("cuda", enabled=precision == "fp16" and torch.device(device).type == "cuda")


def set_requires_grad(module: torch.nn.Module | None, flag: bool) -> None:
    """Freeze or unfreeze a network (``None`` is ignored) around the other network's update."""
    if module is not None:
        for p in module.parameters():
            p.requires_grad_(flag)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_for_training(module: torch.nn.Module, mode: str | None) -> torch.nn.Module:
    """``module`` under ``torch.compile`` for the training forward (``mode`` None: the module itself).

    On a GPU an SR step of small 48 x 48 windows is bound by kernel launches, not arithmetic (docs/sr.md,
    "Session 39"), which compiling fuses and, with ``reduce-overhead``, replays as CUDA graphs. The wrapper
    shares the module's parameters, so optimisers, the EMA and checkpoints keep using ``module`` and its
    state-dict keys. Where dynamo cannot compile it runs eager with a warning instead of failing the run.
    """
    if mode is None:
        return module
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode must be one of {COMPILE_MODES} or None, got {mode!r}")
    import torch._dynamo  # lazy: dynamo's import is slow and only compiled runs need it

    torch._dynamo.config.suppress_errors = True
    return torch.compile(module, mode=mode)


def compiles_to_cuda_graphs(mode: str | None) -> bool:
    """Whether inductor replays ``mode``'s compiled graphs as CUDA graphs (``reduce-overhead`` and
    ``max-autotune`` do): then each training iteration is marked as a step, and outputs kept past it are
    copied."""
    if mode is None:
        return False
    import torch._inductor  # lazy: as in compile_for_training

    return bool(torch._inductor.list_mode_options(mode).get("triton.cudagraphs"))


def compile_report() -> str:
    """What dynamo and inductor did so far in this process, in one line: whether the compiled forward runs
    compiled or fell back to eager, and whether CUDA graphs were used (a device run's log answers it)."""
    from torch._dynamo.utils import counters

    frames, breaks = counters["frames"], sum(counters["graph_break"].values())
    skips = counters["inductor"].get("cudagraph_skips", 0)
    return (
        f"torch.compile: {frames['ok']} of {frames['total']} frames compiled (the rest run eager), "
        f"{breaks} graph breaks, CUDA graphs skipped {skips} times"
    )


def _distributed() -> bool:
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def sync_gradients(*modules: torch.nn.Module | None) -> None:
    """Average gradients across ranks (no-op when not distributed).

    Used instead of DistributedDataParallel: BicycleGAN runs G twice and E twice (once frozen) per backward,
    which DDP's reducer cannot follow. Missing gradients count as zero so every rank reduces the same tensors.
    A module wrapped in DistributedDataParallel (the paired trainer's) is skipped: its reducer averaged them.
    """
    if not _distributed():
        return
    world = torch.distributed.get_world_size()
    for module in modules:
        if module is None or isinstance(module, torch.nn.parallel.DistributedDataParallel):
            continue
        for p in module.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad)
            p.grad.div_(world)


def broadcast_parameters(*modules: torch.nn.Module | None) -> None:
    """Copy rank 0's parameters and buffers to every rank (no-op when not distributed)."""
    if not _distributed():
        return
    for module in modules:
        if module is not None:
            for t in list(module.parameters()) + list(module.buffers()):
                torch.distributed.broadcast(t.data, src=0)


class AdversarialTrainerBase(Trainer):
    """A MONAI ``Trainer`` over ``(batch[input_key], batch[target_key])`` with the trainer's own precision
    (``precision``, or ``amp`` of earlier configs) and one GradScaler per side (``g_scaler``, ``d_scaler``).

    MONAI's ``amp`` stays off: it would only build an unused ``torch.cuda.amp.GradScaler`` in ``run()`` and
    print its deprecation warning. Subclasses name what a resume checkpoint holds in ``checkpoint_objects``.
    """

    #: whether the generator step passes real logits to the GAN loss, as a relativistic loss (ragan) needs
    relativistic_generator_step = False

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        input_key: str,
        target_key: str,
        gan_loss: GanLoss | str = "lsgan",
        epoch_length: int | None = None,
        amp: bool = False,
        precision: str | None = None,
        train_handlers: Sequence | None = None,
        non_blocking: bool = False,
        **trainer_kwargs: Any,
    ) -> None:
        super().__init__(
            device=torch.device(device),
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=PrepareBatchPair(input_key, target_key),
            handlers=train_handlers,
            amp=False,
            decollate=False,
            **trainer_kwargs,
        )
        self.gan_loss = GanLoss(gan_loss) if isinstance(gan_loss, str) else gan_loss
        if self.gan_loss.needs_real_for_generator and not self.relativistic_generator_step:
            # refused now, not at the first adversarial step after a warm start of thousands of iterations
            raise InputError(
                f"gan_mode {self.gan_loss.mode!r} is not available to {type(self).__name__}: its generator "
                "step does not score real images; use lsgan or vanilla"
            )
        self.precision = training_precision(amp, precision, device)
        self.g_scaler, self.d_scaler = (
            grad_scaler(self.precision, device),
            grad_scaler(self.precision, device),
        )

    def _objects(self, *names: str) -> dict[str, Any]:
        """``{name: attribute}`` of the named attributes that are set (not ``None``)."""
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def checkpoint_objects(self) -> dict[str, Any]:
        """Everything a resume checkpoint must hold besides the trainer (see ``ResumeCheckpoint``)."""
        raise NotImplementedError

    def _autocast(self):
        """Autocast of the trainer's precision on its device (a null context for fp32)."""
        return autocast(torch.device(self.state.device), self.precision)

    # a multi-scale discriminator's per-scale logits: GanLoss sums over the scales, as the official GANLoss
    def _g_gan(self, disc: torch.nn.Module, fake: torch.Tensor) -> torch.Tensor:
        return self.gan_loss.generator(disc(fake))

    def _d_gan(self, disc: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return self.gan_loss.discriminator(disc(real), disc(fake))

    def _update(
        self,
        loss: torch.Tensor,
        optimizers: Sequence[Optimizer],
        scaler: torch.amp.GradScaler,
        modules: Sequence[torch.nn.Module | None],
        clip: float | None = None,
    ) -> None:
        """One update: zero the ``optimizers``' gradients, backward ``loss`` (scaled), average the gradients
        of ``modules`` across ranks, clip their norm to ``clip`` (unscaled first), step every optimizer,
        update the scaler."""
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        sync_gradients(*modules)
        if clip:
            for optimizer in optimizers:
                scaler.unscale_(optimizer)
            params = [p for m in modules if m is not None for p in m.parameters()]
            torch.nn.utils.clip_grad_norm_(params, clip)
        for optimizer in optimizers:
            scaler.step(optimizer)
        scaler.update()
