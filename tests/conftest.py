"""Test configuration: the CUDA simulator when there is no GPU, and hypothesis profiles.

The GPU twins run in the same test command: on a machine with an NVIDIA
driver they run on the real GPU, elsewhere under Numba's CUDA simulator,
which must be switched on before numba.cuda is first imported.
"""

import os

import pytest


def _has_nvidia_gpu():
    # the device node, not libcuda: a CUDA toolkit without a GPU ships a libcuda stub
    return os.path.exists("/dev/nvidiactl")


if not _has_nvidia_gpu():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("dev", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    # numba warns about grids too small to fill a real GPU; named here, not in pyproject.toml,
    # because resolving the category imports numba, which must come after the simulator switch
    config.addinivalue_line("filterwarnings", "ignore::numba.core.errors.NumbaPerformanceWarning")


@pytest.fixture(autouse=True)
def whole_vector_paths():
    """Every test sees the convolution paths chosen as on a processor that runs 512-bit vectors
    whole, whichever this one is (on AMD's Zen 4 the strips take fewer layers:
    ``cnnlab.kernels.cpu._strips.STRIPS_ONLY_FOR_PANELS``), so that the rules' tests and the
    paths they force mean the same on every machine; ``tests/test_strips.py`` checks that rule
    itself."""
    from cnnlab.kernels.cpu import _strips

    saved = _strips.STRIPS_ONLY_FOR_PANELS
    _strips.STRIPS_ONLY_FOR_PANELS = False
    yield
    _strips.STRIPS_ONLY_FOR_PANELS = saved


@pytest.fixture(scope="module")
def small_cuda_launches():
    """Tiny blocks and a capped grid, so that several blocks run and the grid-stride loops loop."""
    from cnnlab import config

    config.THREADS_PER_BLOCK = 4
    config.MAX_BLOCKS = 3
    config.GPU_CONV_TILE = 2  # 2x2 output tiles: several tiled blocks per plane
    yield
    config.reset()
