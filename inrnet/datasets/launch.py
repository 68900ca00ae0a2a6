"""Which part of a parts build this process takes, read from the launcher that started it.

A build script ([`parts`][inrnet.datasets.parts]) started by ``torchrun`` (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` set) or as a task of a SLURM job array
(``SLURM_ARRAY_TASK_ID``, ``SLURM_ARRAY_TASK_COUNT``) takes ``--part rank/world`` by
itself, and on a machine with GPUs fits on ``cuda:LOCAL_RANK``. Both at once (an array
of ``torchrun`` jobs) is rank ``task * nproc + RANK`` of ``tasks * nproc``. A launcher
with a single process is ignored, as if there were none.

No process group is initialised: the processes share nothing but the build directory
(each fits its own chunks; the merge is serialised by a lock file, see
[`merge_parts`][inrnet.datasets.parts.merge_parts]).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["LAUNCHERS", "Launch", "detect_launch", "resolve_part", "resolve_device"]

LAUNCHERS = ("auto", "torchrun", "slurm", "none")
"""Values of ``--launcher``: detect, require torchrun's or SLURM's variables, or ignore both."""


@dataclass(frozen=True)
class Launch:
    """Where this process stands among the processes of one launch.

    Attributes:
        launcher: ``"torchrun"``, ``"slurm"``, ``"torchrun+slurm"`` or ``"none"``.
        rank: this process's index among ``world`` (0 without a launcher).
        world: the number of processes (1 without a launcher).
        local_rank: the index among the processes of this machine (torchrun's
            ``LOCAL_RANK``; 0 for SLURM array tasks, which get their own devices).
    """

    launcher: str = "none"
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def launched(self) -> bool:
        """Whether several processes share the build (``world > 1``)."""
        return self.world > 1


def _int(env: Mapping[str, str], key: str, default: int | None = None) -> int:
    value = env.get(key)
    if value in (None, ""):
        if default is None:
            raise ValueError(f"${key} is not set")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${key} must be an integer, got {value!r}") from None


def _torchrun(env: Mapping[str, str]) -> tuple[int, int, int]:
    rank, world, local = _int(env, "RANK"), _int(env, "WORLD_SIZE"), _int(env, "LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise ValueError(f"torchrun's RANK={rank} does not lie in [0, WORLD_SIZE={world})")
    return rank, world, local


def _slurm_array(env: Mapping[str, str]) -> tuple[int, int]:
    task, low = _int(env, "SLURM_ARRAY_TASK_ID"), _int(env, "SLURM_ARRAY_TASK_MIN", 0)
    step = _int(env, "SLURM_ARRAY_TASK_STEP", 1)
    if "SLURM_ARRAY_TASK_COUNT" in env:
        count = _int(env, "SLURM_ARRAY_TASK_COUNT")
    else:  # SLURM before 18.08 has no COUNT
        count = (_int(env, "SLURM_ARRAY_TASK_MAX") - low) // step + 1
    k, rest = divmod(task - low, step)
    if rest or not 0 <= k < count:
        raise ValueError(f"SLURM array task {task} is not one of {count} tasks {low}, {low + step}, ...: "
                         "use a contiguous array (--array=0-N) or pass --part k/n and --launcher none")
    return k, count


def detect_launch(env: Mapping[str, str] | None = None, launcher: str = "auto") -> Launch:
    """Read the launcher's variables from ``env`` (default ``os.environ``).

    Args:
        env: the environment variables.
        launcher: one of [`LAUNCHERS`][inrnet.datasets.launch.LAUNCHERS]: ``"auto"`` takes
            torchrun's and a SLURM array's variables where set; ``"torchrun"`` or
            ``"slurm"`` requires that launcher's (and takes only those); ``"none"`` ignores
            both.

    Returns:
        The [`Launch`][inrnet.datasets.launch.Launch]; ``Launch()`` (rank 0 of 1) when no
        launcher, or one of a single process, is found.

    Raises:
        ValueError: an unknown ``launcher``, a required launcher's variables missing, or
            variables that are not integers or do not describe a valid rank.
    """
    env = os.environ if env is None else env
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    if launcher == "none":
        return Launch()
    use_torchrun = launcher == "torchrun" or (launcher == "auto" and "WORLD_SIZE" in env and "RANK" in env)
    use_slurm = launcher == "slurm" or (launcher == "auto" and "SLURM_ARRAY_TASK_ID" in env)
    rank, world, local, names = 0, 1, 0, []
    if use_slurm:
        rank, world = _slurm_array(env)
        names.append("slurm")
    if use_torchrun:
        r, w, local = _torchrun(env)
        rank, world = rank * w + r, world * w
        names.insert(0, "torchrun")
    if world == 1:
        return Launch()
    return Launch("+".join(names), rank, world, local)


def resolve_part(part: tuple[int, int] | None, launch: Launch) -> tuple[int, int] | None:
    """The ``(k, n)`` block of chunks this process builds.

    Args:
        part: the explicit ``--part`` (``None`` if not given).
        launch: what [`detect_launch`][inrnet.datasets.launch.detect_launch] found.

    Returns:
        ``part`` without a launcher (``None``: every selected chunk), else the launcher's
        ``(rank, world)``.

    Raises:
        ValueError: an explicit ``part`` that disagrees with the launcher's, naming both.
    """
    if not launch.launched:
        return part
    own = (launch.rank, launch.world)
    if part is not None and tuple(part) != own:
        raise ValueError(f"--part {part[0]}/{part[1]} disagrees with {launch.launcher}, which makes this process "
                         f"rank {launch.rank} of {launch.world} (--part {own[0]}/{own[1]}): drop --part to take "
                         f"the launcher's, or pass --launcher none to build part {part[0]}/{part[1]}")
    return own


def resolve_device(device: str | None, launch: Launch, cuda_devices: int) -> str:
    """The fitting device of this process.

    Args:
        device: the explicit ``--device`` (``None``: CUDA if there is a device, else CPU).
        launch: what [`detect_launch`][inrnet.datasets.launch.detect_launch] found.
        cuda_devices: how many CUDA devices this process sees (``torch.cuda.device_count()``
            when CUDA is usable, else 0).

    Returns:
        ``device`` as given if it names a device index or is not CUDA; otherwise ``"cpu"``
        without CUDA devices, ``"cuda"`` without a launcher, and ``"cuda:i"`` with
        ``i = local_rank % cuda_devices`` under one (so each of the processes of a machine
        takes its own GPU; more processes than GPUs share them round-robin).
    """
    if device not in (None, "cuda"):
        return device
    if cuda_devices < 1:
        return "cpu" if device is None else device
    if not launch.launched:
        return "cuda"
    return f"cuda:{launch.local_rank % cuda_devices}"
