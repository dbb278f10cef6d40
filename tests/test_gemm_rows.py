"""The GEMM on row-major blocks that kernels call (cnnlab.kernels.cpu._blas): compiled (BLAS)
and from Python (NumPy, for kernels run as plain Python) against NumPy's product."""

import numpy as np
import pytest
from numba import njit

from cnnlab.kernels.cpu._blas import gemm_rows, gemm_rows_bt


@njit
def _compiled(m, n, k, a, lda, b, ldb, beta, c, ldc):
    gemm_rows(m, n, k, a, lda, b, ldb, beta, c, ldc)


@njit
def _compiled_bt(m, n, k, a, lda, b, ldb, beta, c, ldc):
    gemm_rows_bt(m, n, k, a, lda, b, ldb, beta, c, ldc)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("compiled", [False, True])
def test_blocks_of_larger_matrices(dtype, beta, transposed, compiled):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 9)).astype(dtype)  # the block: rows 1..4, columns 2..7
    b = rng.standard_normal((8, 11)).astype(dtype) if not transposed else rng.standard_normal((7, 13)).astype(dtype)
    c = rng.standard_normal((6, 10)).astype(dtype)
    m, k = 4, 6
    n = 5
    if transposed:  # b's block: rows 1..5 (n of them), columns 3..8 (k)
        expected_product = a[1:5, 2:8].astype(np.float64) @ b[1:6, 3:9].T.astype(np.float64)
        b_block, ldb = b[1:, 3:], 13
    else:  # b's block: rows 1..6 (k), columns 4..8 (n)
        expected_product = a[1:5, 2:8].astype(np.float64) @ b[1:7, 4:9].astype(np.float64)
        b_block, ldb = b[1:, 4:], 11
    expected = c.astype(np.float64)
    expected[2:6, 3:8] = expected_product + beta * expected[2:6, 3:8]
    function = {(False, False): gemm_rows, (False, True): gemm_rows_bt,
                (True, False): _compiled, (True, True): _compiled_bt}[compiled, transposed]
    function(m, n, k, a[1:, 2:], 9, b_block, ldb, beta, c[2:, 3:], 10)
    np.testing.assert_allclose(c, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


def test_the_gemm_is_numpys_openblas_where_numpy_ships_one():
    """The kernels' GEMM is the OpenBLAS in NumPy's wheel when there is one (this test suite's
    NumPy is such a wheel), and gemm_blas describes that library."""
    from cnnlab.kernels.cpu import _blas

    library = _blas._numpy_openblas()
    if library is None:
        pytest.skip("this NumPy ships no OpenBLAS of its own")
    assert _blas._GEMM_LIBRARY == library._name
    info = _blas.gemm_blas()
    assert info is not None and info["filepath"].endswith(library._name.rsplit("/", 1)[-1])


def test_cnnlab_blas_scipy_calls_scipys_gemm_and_gets_the_same_products():
    """With CNNLAB_BLAS=scipy the kernels call SciPy's cython_blas GEMMs instead (through the
    same name, so the cached kernels serve both), in single and double precision."""
    import os
    import subprocess
    import sys

    script = """
import numpy as np
from numba import njit
from cnnlab.kernels.cpu import _blas

@njit
def product(a, b, c):
    _blas.gemm_rows(a.shape[0], b.shape[1], a.shape[1], a, a.shape[1], b, b.shape[1], 0.0, c, c.shape[1])

assert _blas._GEMM_LIBRARY is None
rng = np.random.default_rng(0)
for dtype in (np.float32, np.float64):
    a, b = rng.standard_normal((5, 7)).astype(dtype), rng.standard_normal((7, 9)).astype(dtype)
    c = np.empty((5, 9), dtype)
    product(a, b, c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-5)
print("ok", "64_" not in _blas.gemm_blas()["filepath"])
"""
    result = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, CNNLAB_BLAS="scipy"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "True"]
