"""Where a model runs, and in what precision.

Precision belongs to a model or a call, never to the process. accelerate keeps its mixed precision in a
process-wide singleton (`AcceleratorState`): two accelerators with different precisions in one process raise, so a
notebook that loads one model in bf16 and another in fp32, or a bf16 run followed by an fp32 run, would crash.
sendit therefore never gives accelerate a precision: every forward pass runs under `autocast(device, precision)`
with the precision of the model or call at hand, and accelerate only starts processes, reduces, gathers and
tracks.

`precision: auto` picks bf16 where the hardware has bf16 matrix units (CUDA, CPUs with AMX) and fp32 elsewhere:
on a CPU without AMX a bf16 matmul ran ~200x slower than fp32. `SENDIT_PRECISION=bf16|fp32` forces what `auto`
picks, so that a machine can exercise the path it would not choose (CI runs the precision tests both ways).
"""

from __future__ import annotations

import functools
import os
from contextlib import AbstractContextManager

import torch

from sendit.config.fields import PRECISIONS
from sendit.errors import ConfigError

RESOLVED = tuple(p for p in PRECISIONS if p != "auto")  # what a model runs in
ENV = "SENDIT_PRECISION"


class PrecisionError(ConfigError):
    """An unknown precision name (from a flag, a config or SENDIT_PRECISION)."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.cache  # /proc/cpuinfo does not change while the process runs
def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False


def bf16_supported(device: torch.device) -> bool:
    """bf16 pays where the hardware has bf16 matrix units: CUDA (Ampere+) and CPUs with AMX. Elsewhere
    (AVX2, AVX-512 without AMX, Arm) CPU bf16 matmuls are often far slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_amx()


def forced_precision() -> str | None:
    """The precision `auto` is forced to by SENDIT_PRECISION, or None."""
    value = os.environ.get(ENV, "").strip().lower()
    if not value or value == "auto":
        return None
    if value not in RESOLVED:
        raise PrecisionError(f"{ENV}={os.environ[ENV]!r} is not a precision; set it to {' or '.join(RESOLVED)} (or unset it "
                             f"to let 'auto' follow the hardware).")
    return value


def resolve_precision(precision: str, device: torch.device | None = None) -> str:
    """'bf16' or 'fp32' for a requested 'auto', 'bf16' or 'fp32' on `device`: the one place a precision is
    resolved, once per run (`run.lifecycle.Context.precision`, `sendit bench`) or per loaded model
    (`serve.model_folder.load`)."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision
    forced = forced_precision()
    if forced:
        return forced
    return "bf16" if bf16_supported(device or default_device()) else "fp32"


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """The forward-pass context of a model in `precision` ('bf16' or 'fp32'); weights stay fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class Processes:
    """The processes of a job (one, or N under `accelerate launch`/torchrun) and its live trackers.

    Built on accelerate's `PartialState`, which knows the processes and nothing of precision, not on
    `Accelerator`, whose process-wide `AcceleratorState` holds one mixed precision: a sendit job never sets or
    reads it, so sendit runs beside a Trainer or another sendit model in any precision, in any order.
    """

    def __init__(self, tracker: str | None = None, project_dir: str | None = None):
        from accelerate import PartialState

        # cpu=True on GPU-less machines: without it accelerate treats torchrun/`accelerate launch --multi_gpu`
        # processes as independent single-process runs instead of one gloo DDP job.
        self.state = PartialState(cpu=not torch.cuda.is_available())
        self.device: torch.device = self.state.device
        self.trackers: list = []
        if tracker and self.is_main_process:  # the name and its package are checked by config and check_tracker
            from accelerate.tracking import LOGGER_TYPE_TO_CLASS

            # W&B takes its folder as wandb.init's `dir` (and honours WANDB_MODE=offline: no network, files only)
            folder = {"dir": project_dir} if tracker == "wandb" else {"logging_dir": project_dir}
            self.trackers = [LOGGER_TYPE_TO_CLASS[tracker]("sendit", **folder)]

    num_processes = property(lambda self: self.state.num_processes)
    process_index = property(lambda self: self.state.process_index)
    local_process_index = property(lambda self: self.state.local_process_index)
    is_main_process = property(lambda self: self.state.is_main_process)
    is_local_main_process = property(lambda self: self.state.is_local_main_process)

    def __repr__(self) -> str:
        return f"Processes({self.num_processes} on {self.device})"

    def wait_for_everyone(self) -> None:
        self.state.wait_for_everyone()

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        from accelerate.utils import reduce

        return reduce(tensor, op) if self.num_processes > 1 else tensor

    def start_trackers(self, config: dict) -> None:
        """Start the trackers with the run's config as hyperparameters: `section.key` names, and scalars only
        (what TensorBoard's hparams and MLflow's params accept), lists and mappings as text."""
        params = {f"{section}.{k}": str(v) if isinstance(v, (list, dict)) else v
                  for section, values in config.items() if isinstance(values, dict) for k, v in values.items()}
        for t in self.trackers:
            t.start()
            t.store_init_configuration({k: v for k, v in params.items() if v is not None})

    def log(self, values: dict, step: int) -> None:
        for t in self.trackers:
            t.log(values, step=step)

    def end_trackers(self) -> None:
        for t in self.trackers:
            t.finish()
        self.trackers = []

    @staticmethod
    def unwrap(model: torch.nn.Module) -> torch.nn.Module:
        """The model inside a DDP (or torch.compile) wrapper."""
        from torch.nn.parallel import DistributedDataParallel

        while True:
            if isinstance(model, DistributedDataParallel):
                model = model.module
            elif isinstance(model, torch._dynamo.eval_frame.OptimizedModule):
                model = model._orig_mod
            else:
                return model

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as the training loop drives it: itself in one process, DistributedDataParallel in several
        (not `Accelerator.prepare_model`, which would wrap the forward in the process-wide mixed precision)."""
        if self.num_processes == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_process_index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
