"""Where the teacher comes from, and where its weights live while it is not scoring.

Three teacher sources (`VZeroConfig.teacher_source`):

- `"external"`: a separate model (e.g. Qwen3.5-27B), prepared by the base trainer as `trainer.teacher_model`;
- `"frozen"`: the initial student, never updated. A full-parameter student is copied once ([`self_teacher_copy`]); a
  PEFT student needs no copy: its base model with the adapter disabled is the initial student ([`teacher_for_replay`]);
- `"ema"`: an exponential moving average of the student, `theta_t <- (1 - r) * theta_t + r * theta_s` after every
  optimizer step ([`ema_update`], run by [`EMACallback`]); saved in each checkpoint and restored on resume
  ([`save_ema`], [`load_ema`]).

Every source is a model of the student's family, so shared-prefix scoring applies to the self-teachers whenever it
applies to the student. [`setup_teacher`] builds the self-teachers once the base trainer has prepared the models;
offload ([`offloaded`]) keeps an external teacher on the CPU between generation batches. [`LocalTeacher`] is what the
trainer knows of its teacher: the model whose weights score, how it is made ready to replay rollouts, and its output
layer (a teacher served by vLLM is [`vzero_trl.served_teacher`] instead).
"""

import copy
import os
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator
from accelerate.utils import is_peft_model
from transformers import PreTrainedModel, TrainerCallback

from .checkpoints import atomic_save


if TYPE_CHECKING:
    from .config import VZeroConfig


EMA_FILE = "ema_teacher.pt"


def check_teacher_model(
    teacher_source: str, teacher_model: str | PreTrainedModel | None, served: bool = False
) -> None:
    """Raise unless a `teacher_model` is given exactly when `teacher_source` is `"external"` and not `served`."""
    if served and teacher_model is not None:
        raise ValueError(
            "`teacher_server_urls` scores both views on the teacher's servers; pass `teacher_model=None` (its name, if "
            "needed, goes in `teacher_model_name_or_path`) or unset `teacher_server_urls`."
        )
    if teacher_source == "external" and teacher_model is None and not served:
        raise ValueError(
            "V-Zero needs a local `teacher_model` to replay the rollouts under both evidence views, a served one "
            "(`teacher_server_urls`), or a self-teacher: `teacher_source='frozen'` or `'ema'`."
        )
    if teacher_source != "external" and teacher_model is not None:
        raise ValueError(
            f"teacher_source={teacher_source!r} builds the teacher from the student; pass `teacher_model=None` "
            "or set `teacher_source='external'`."
        )


def setup_teacher(
    args: "VZeroConfig",
    teacher_model: torch.nn.Module | None,
    student: torch.nn.Module,
    accelerator: Accelerator,
    sharded: bool,
    redirect: Callable,
) -> "LocalTeacher":
    """
    The trainer's teacher once the base trainer has prepared the models: an external teacher, moved to the CPU when
    offloaded (it comes back per generation batch through [`offloaded`]), or a self-teacher built from the student.

    Args:
        args ([`VZeroConfig`]):
            Its `teacher_source` (`"external"`, `"frozen"` or `"ema"`) and `offload_teacher`.
        teacher_model (`torch.nn.Module` or `None`):
            The prepared external teacher, `None` for a self-teacher.
        student (`torch.nn.Module`):
            The student as the trainer holds it (possibly wrapped, possibly a PEFT model).
        accelerator (`accelerate.Accelerator`):
            The trainer's: it unwraps the models and gives the device the teacher scores on.
        sharded (`bool`):
            Whether DeepSpeed or FSDP runs the models: neither offload nor a self-teacher supports it.
        redirect (`Callable`):
            The trainer's `_forward_redirection`, through which an external teacher's forwards go.

    Returns:
        [`LocalTeacher`]: its `model` is the trainer's `teacher_model` (`None` for the frozen teacher of a PEFT
        student, whose base model with the adapter disabled scores).
    """
    teacher_source, offload = args.teacher_source, args.offload_teacher
    if teacher_source == "external":
        if offload:
            if sharded:
                raise ValueError("`offload_teacher` moves a plain module; it does not run under DeepSpeed or FSDP.")
            teacher_model.to("cpu")
        return LocalTeacher(teacher_model, None, accelerator, offload, redirect)
    if sharded:
        raise ValueError(
            f"teacher_source={teacher_source!r} copies unsharded weights and does not run under "
            "DeepSpeed or FSDP; use DDP or one GPU, or an external teacher."
        )
    student = accelerator.unwrap_model(student)
    if is_peft_model(student):
        if teacher_source == "ema":
            raise ValueError(
                "teacher_source='ema' averages all of the student's weights and needs a full-parameter student; "
                "with a LoRA student use teacher_source='frozen' (the base model, adapter disabled)."
            )
        return LocalTeacher(None, student, accelerator, offload)
    return LocalTeacher(self_teacher_copy(student), None, accelerator, offload)


def self_teacher_copy(student: PreTrainedModel) -> PreTrainedModel:
    """
    A detached copy of the unwrapped student, in eval mode and without gradients: the `"frozen"` teacher of a
    full-parameter student, or the starting point of the `"ema"` teacher.

    Args:
        student ([`~transformers.PreTrainedModel`]):
            The unwrapped student (not a PEFT model).

    Returns:
        [`~transformers.PreTrainedModel`]: the copy, on the student's device, in the student's dtype.
    """
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    teacher.activation_checkpointing_disable()
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, rate: float) -> None:
    """
    One EMA step, in place: `theta_t <- (1 - rate) * theta_t + rate * theta_s` for every parameter, matched by name.

    Args:
        teacher (`torch.nn.Module`):
            The EMA teacher, a copy of `student` from [`self_teacher_copy`].
        student (`torch.nn.Module`):
            The unwrapped student after the optimizer step.
        rate (`float`):
            Weight of the student, in `(0, 1]`; `1` makes the teacher follow the student exactly.
    """
    student_params = dict(student.named_parameters())
    for name, param in teacher.named_parameters():
        param.lerp_(student_params[name].detach().to(param.dtype), rate)


class EMACallback(TrainerCallback):
    """Runs [`ema_update`] after every optimizer step (`on_step_end` follows `optimizer.step()` in the HF loop)."""

    def __init__(self, teacher: torch.nn.Module, unwrap, rate: float):
        self.teacher, self.unwrap, self.rate = teacher, unwrap, rate

    def on_step_end(self, args, state, control, model=None, **kwargs):
        ema_update(self.teacher, self.unwrap(model), self.rate)


def save_ema(teacher: torch.nn.Module, checkpoint_dir: str) -> None:
    """Write the EMA teacher's parameters into a checkpoint folder (beside the student's weights), atomically."""
    state = {name: p.detach().cpu() for name, p in teacher.named_parameters()}
    atomic_save(state, os.path.join(checkpoint_dir, EMA_FILE))


def load_ema(teacher: torch.nn.Module, checkpoint_dir: str) -> None:
    """Restore the EMA teacher saved by [`save_ema`]; raise if the checkpoint has none (a resume would diverge)."""
    path = os.path.join(checkpoint_dir, EMA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{checkpoint_dir} has no {EMA_FILE}: it was not written by a run with teacher_source='ema', so resuming "
            "from it would restart the EMA teacher from the resumed student."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    with torch.no_grad():
        for name, param in teacher.named_parameters():
            param.copy_(state[name])


@contextmanager
def teacher_for_replay(teacher: PreTrainedModel | None, peft_student: torch.nn.Module | None):
    """
    The model that scores the rollouts, for as long as the context lasts.

    Args:
        teacher ([`~transformers.PreTrainedModel`] or `None`):
            The unwrapped teacher (external, frozen copy or EMA), or `None` for the frozen teacher of a PEFT student.
        peft_student (`peft.PeftModel` or `None`):
            The unwrapped PEFT student when `teacher` is `None`: its adapter is disabled inside the context, so its base
            model, shared with the student (no second copy of the weights), is the initial student.

    Yields:
        [`~transformers.PreTrainedModel`]: the teacher model.
    """
    if teacher is not None:
        yield teacher
        return
    base, was_training = peft_student.get_base_model(), peft_student.training
    base.eval()
    try:
        with peft_student.disable_adapter():
            yield base
    finally:
        base.train(was_training)


@contextmanager
def offloaded(model: torch.nn.Module, device: torch.device | str, enabled: bool = True):
    """
    Move `model` to `device` for the context and back to the CPU after it (teacher offload): device memory then holds
    the teacher only while it scores a generation batch. With `enabled=False`, a no-op.
    """
    if not enabled:
        yield model
        return
    model.to(device)
    try:
        yield model
    finally:
        model.to("cpu")


class LocalTeacher:
    """
    The teacher that scores rollouts in this process: which weights score, how the teacher is made ready to replay a
    generation batch, and its output layer. Built by [`setup_teacher`].

    Args:
        model (`torch.nn.Module` or `None`):
            The trainer's `teacher_model`: the external teacher as the accelerator prepared it, a frozen copy or the
            EMA teacher; `None` for the frozen teacher of a PEFT student.
        peft_student (`peft.PeftModel` or `None`):
            The unwrapped PEFT student whose base model, adapter disabled, is the teacher when `model` is `None`.
        accelerator (`accelerate.Accelerator`):
            The trainer's: it unwraps the teacher, and its device is where the teacher scores (an offloaded teacher
            comes there for each replay).
        offload (`bool`):
            `VZeroConfig.offload_teacher`.
        redirect (`Callable`, *optional*):
            For an external teacher, the trainer's `_forward_redirection`: the teacher's forwards then go through the
            accelerator's wrapper (so FSDP or DeepSpeed gather its weights), as `trl.DistillationTrainer` routes them.
    """

    def __init__(
        self,
        model: torch.nn.Module | None,
        peft_student: torch.nn.Module | None,
        accelerator: Accelerator,
        offload: bool,
        redirect: Callable | None = None,
    ):
        self.model, self.peft_student, self.accelerator = model, peft_student, accelerator
        self.offload, self.redirect = offload, redirect

    @property
    def weights(self) -> PreTrainedModel:
        """The model whose weights score: the unwrapped teacher, or the PEFT student's base model."""
        return self.peft_student.get_base_model() if self.model is None else self.accelerator.unwrap_model(self.model)

    def output_layer(self) -> torch.nn.Module:
        """The teacher's `lm_head`, for the full reverse KL (a PEFT student's base carries no adapter on it)."""
        return self.weights.get_output_embeddings()

    @contextmanager
    def replaying(self):
        """
        The teacher, ready to replay a generation batch: in eval mode, on `device` (an offloaded teacher goes back to
        the CPU afterwards), a PEFT student's adapter disabled ([`teacher_for_replay`]).

        Yields:
            `tuple`: the model that scores, and the forward that [`~vzero_trl.replay.replay_teacher`] calls with it
            (`None`: the model's own).
        """
        teacher = None if self.model is None else self.accelerator.unwrap_model(self.model)
        if self.model is not None:
            self.model.eval()
        device = self.accelerator.device
        with offloaded(teacher, device, self.offload), teacher_for_replay(teacher, self.peft_student) as scorer:
            yield scorer, None if self.redirect is None else partial(self.redirect, self.model, teacher)
