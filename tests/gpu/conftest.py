"""The device the GPU tests run on, chosen in one place, and their shared comparison.

Every test under ``tests/gpu`` is marked ``gpu`` (deselected by default; run them with
``pytest -m gpu tests/gpu``) and runs one computation on `device` that it compares with
an independent CPU reference: a float64 loop or per-pair formula, a ``torch.nn`` twin on a
grid, or the brute-force neighbour search. `device` is chosen by the environment
variable ``INRNET_GPU_TESTS_ON``:

* unset: CUDA if a device is visible, otherwise every test skips, saying why;
* ``cuda``: CUDA, and a test *fails* when no device is visible (``benchmarks/gpu_check.sh``
  sets this, so a broken driver cannot pass as a run of skips);
* ``cpu``: the same tests on the CPU. This checks only the test code (references,
  tolerances, plumbing) on a machine without a GPU, not the GPU path.

TF32 is switched off in every test, so float32 matmuls and cuDNN convolutions on the
device round like the CPU's and the float32 tolerances below hold.
"""

import os

import pytest
import torch

#: Values of ``INRNET_GPU_TESTS_ON``.
TARGETS = ("cuda", "cpu")
#: float32 on the device against a float64 reference.
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="session")
def device() -> torch.device:
    """``torch.device("cuda")``, or ``"cpu"`` under ``INRNET_GPU_TESTS_ON=cpu`` (module docstring)."""
    target = os.environ.get("INRNET_GPU_TESTS_ON", "")
    if target and target not in TARGETS:
        pytest.fail(f"INRNET_GPU_TESTS_ON must be one of {TARGETS} or unset, got {target!r}")
    if target == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        reason = (f"needs a CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}, "
                  f"none visible); INRNET_GPU_TESTS_ON=cpu runs these tests' code on the CPU")
        if target == "cuda":
            pytest.fail(f"INRNET_GPU_TESTS_ON=cuda but the test {reason}")
        pytest.skip(reason)
    return torch.device("cuda")


@pytest.fixture(autouse=True)
def _no_tf32():
    """float32 matmuls and convolutions in full precision (TF32 off) for the test, restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def assert_close(got: torch.Tensor, want: torch.Tensor, rtol: float = RTOL, atol: float = ATOL) -> None:
    """``got`` (any device, float32) equals the CPU reference ``want`` (float64) to float32 accuracy.

    ``atol`` is relative to the reference's largest magnitude when that exceeds 1 (a weight
    gradient sums many terms), so one tolerance fits values and gradients.
    """
    want = want.detach().cpu().double()
    assert got.shape == want.shape, f"shape {tuple(got.shape)} != reference {tuple(want.shape)}"
    scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
    torch.testing.assert_close(got.detach().cpu().double(), want, rtol=rtol, atol=atol * scale)


@pytest.fixture
def close():
    """`assert_close`: a device result against its float64 CPU reference."""
    return assert_close
