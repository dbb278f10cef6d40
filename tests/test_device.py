"""Dispatch: where arrays live decides which kernels run; no GPU gives a clear error."""

import numpy as np
import pytest

import cnnlab
import cnnlab.device as device
import cnnlab.kernels.cpu


def test_numpy_input_runs_cpu_kernels():
    assert device.kernels_for(np.ones(3), None, x=np.ones(2)) is cnnlab.kernels.cpu
    assert device.device_of(np.ones(3)) == "cpu"
    assert not device.is_gpu_array([1.0, 2.0])


def test_objects_with_cuda_array_interface_count_as_gpu_arrays():
    class FakeTensor:
        __cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (0, False), "version": 3}

    assert device.is_gpu_array(FakeTensor())
    with pytest.raises(TypeError, match="weight is on the cpu but x is on the cuda"):
        device.kernels_for(x=FakeTensor(), weight=np.ones(2))


def test_to_host_passes_numpy_through():
    a = np.ones(3)
    assert cnnlab.to_host(a) is a
    np.testing.assert_array_equal(cnnlab.to_host([1, 2]), [1, 2])


def test_without_a_gpu_asking_for_one_is_a_clear_runtime_error(monkeypatch):
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    with pytest.raises(RuntimeError, match="no CUDA GPU is available"):
        cnnlab.to_device(np.ones(3))


def test_import_does_not_import_numba_cuda():
    import subprocess
    import sys

    code = "import sys, cnnlab, cnnlab.functional; print('numba.cuda' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_views_with_odd_strides_on_length_one_axes_get_plain_strides():
    """NumPy calls ``x[None]`` (stride 0 on the new axis) contiguous; Numba's device arrays call
    a zero stride broadcast, so to_device copies such a view to plain row-major strides."""
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    view = image[None, None]
    assert view.strides[:2] == (0, 0) and view.flags.c_contiguous
    copy = device.canonical_copy(view)
    assert copy.strides == (48, 48, 16, 4)
    np.testing.assert_array_equal(copy, view)
    assert device.canonical_copy(image) is image  # plain strides: no copy
