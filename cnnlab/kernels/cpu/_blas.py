"""A BLAS matrix product with leading dimensions, callable from compiled kernels.

``np.dot`` inside Numba multiplies whole contiguous matrices (it copies anything else, and
refuses a strided output). :func:`gemm_rows` calls a BLAS GEMM on row-major blocks given by
their first element and the distance between rows, so that a kernel can multiply a block of
columns of one matrix into a block of columns of another in place:
``out[:, p0:p1] = weight @ x[:, p0:p1]``.

The GEMM it calls is the OpenBLAS that NumPy's wheels ship, where there is one, else SciPy's
(``scipy.linalg.cython_blas``, the one Numba's ``np.dot`` calls). The compiled kernels call it
by a name of their own, ``cnnlab_sgemm`` or ``cnnlab_dgemm``, that this module maps to the
library's address in each process, so that they stay cacheable whichever library it is.
NumPy's OpenBLAS is preferred because it is the newer build: on OpenBLAS's Haswell kernels
(AVX2) the forward convolutions ran up to 1.4x faster with it than with SciPy's
(``CNNLAB_BLAS=scipy python bench/small_gemm.py`` against ``python bench/small_gemm.py``,
docs/performance.md). ``CNNLAB_BLAS=scipy``, set before the import, takes SciPy's.

:func:`gemm_blas` says which library that is, and :func:`small_gemm_limit` whether it has
OpenBLAS's small-matrix kernels, which the convolutions' GEMMs are cut to fit where they do.
"""

import ctypes
import functools
import glob
import os

import numpy as np
from llvmlite import binding, ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload


def _gemm_intrinsic(transpose_b):
    """The row-major GEMM intrinsic, with ``b`` as given (``c = a @ b``) or transposed
    (``c = a @ b.T``, ``b`` then being ``n`` rows of ``k``)."""

    @intrinsic
    def gemm(typingctx, m, n, k, a, lda, b, ldb, beta, c, ldc):
        arrays = (a, b, c)
        if not all(isinstance(t, types.Array) for t in arrays) or len({t.dtype for t in arrays}) != 1 \
                or a.dtype not in (types.float32, types.float64) or not isinstance(beta, types.Float):
            return None
        dtype = a.dtype
        signature = types.void(types.intp, types.intp, types.intp, a, types.intp, b, types.intp, beta, c, types.intp)

        def codegen(context, builder, signature, args):
            m, n, k, a, lda, b, ldb, beta, c, ldc = args
            byte, pointer = ir.IntType(8), ir.IntType(8).as_pointer()

            def data(index, value):
                array = context.make_array(signature.args[index])(context, builder, value)
                return builder.bitcast(array.data, pointer)

            scalar = context.get_value_type(dtype)
            integer = ir.IntType(64)  # by pointer: a library of 32-bit integers reads the low half

            def slot(value, kind=integer):
                if kind is not integer:
                    value = kind(value)
                elif value.type.width < 64:
                    value = builder.sext(value, integer)
                return cgutils.alloca_once_value(builder, value)

            alpha_slot = cgutils.alloca_once_value(builder, scalar(1.0))
            beta_slot = cgutils.alloca_once_value(builder, context.cast(builder, beta, signature.args[7], dtype))
            function_type = ir.FunctionType(ir.VoidType(), [pointer, pointer] + [integer.as_pointer()] * 3
                                            + [scalar.as_pointer(), pointer, integer.as_pointer(), pointer,
                                               integer.as_pointer(), scalar.as_pointer(), pointer,
                                               integer.as_pointer()])
            name = "cnnlab_sgemm" if dtype == types.float32 else "cnnlab_dgemm"
            function = cgutils.get_or_insert_function(builder.module, function_type, name)
            # column-major BLAS sees each row-major block transposed: c^T = b^T a^T (or b a^T)
            first = slot(ord("T") if transpose_b else ord("N"), byte)
            no = slot(ord("N"), byte)
            builder.call(function, [first, no, slot(n), slot(m), slot(k), alpha_slot, data(5, b), slot(ldb),
                                    data(3, a), slot(lda), beta_slot, data(8, c), slot(ldc)])
            return context.get_dummy_value()

        return signature, codegen

    return gemm


def _numpy_openblas():
    """The OpenBLAS library that NumPy's wheels ship (``numpy.libs``: 64-bit integers, its
    symbols named ``scipy_sgemm_64_`` and so on), loaded, or None."""
    import numpy

    folder = os.path.join(os.path.dirname(os.path.dirname(numpy.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(folder, "libscipy_openblas64_*"))):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        if all(hasattr(library, f"scipy_{x}gemm_64_") for x in "sd"):
            return library
    return None


def _scipy_gemm(name):
    """The address of ``scipy.linalg.cython_blas``'s GEMM ``name`` (``'sgemm'`` or ``'dgemm'``)."""
    from scipy.linalg import cython_blas

    capsule = ctypes.py_object(cython_blas.__pyx_capi__[name])
    get_name, get_pointer = ctypes.pythonapi.PyCapsule_GetName, ctypes.pythonapi.PyCapsule_GetPointer
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return get_pointer(capsule, get_name(capsule))


def _register_gemms():
    """Map ``cnnlab_sgemm`` and ``cnnlab_dgemm`` (the names the compiled kernels call; the
    Fortran interface, every argument by pointer) to NumPy's OpenBLAS, else SciPy's GEMMs;
    return the file of the library chosen (None: SciPy's)."""
    library = None if os.environ.get("CNNLAB_BLAS") == "scipy" else _numpy_openblas()
    for x in "sd":
        if library is not None:
            address = ctypes.cast(getattr(library, f"scipy_{x}gemm_64_"), ctypes.c_void_p).value
        else:
            address = _scipy_gemm(f"{x}gemm")
        binding.add_symbol(f"cnnlab_{x}gemm", address)
    return None if library is None else library._name


_GEMM_LIBRARY = _register_gemms()


def _block(array, rows, columns, distance):
    """The (rows, columns) block of row-major memory that starts at ``array``'s first element,
    rows ``distance`` elements apart (a view: no bounds are checked, as in the compiled GEMM)."""
    return np.lib.stride_tricks.as_strided(array, (rows, columns), (distance * array.itemsize, array.itemsize))


def gemm_rows(m, n, k, a, lda, b, ldb, beta, c, ldc):
    """Row-major ``c[:m, :n] = a[:m, :k] @ b[:k, :n] + beta * c[:m, :n]`` by BLAS GEMM.

    ``a``, ``b``, ``c`` are arrays of one float dtype (float32 or float64) whose first element
    starts the block; ``lda``, ``ldb``, ``ldc`` are their distances between rows, in elements.
    The caller guarantees that the blocks lie inside the arrays. Compiled kernels call BLAS
    directly (the intrinsic below); called from Python (a kernel run as plain Python, see
    :func:`cnnlab.compilation.interpreting`) it computes the same with NumPy."""
    target = _block(c, m, n, ldc)
    product = _block(a, m, k, lda) @ _block(b, k, n, ldb)
    target[...] = product if beta == 0 else product + beta * target


def gemm_rows_bt(m, n, k, a, lda, b, ldb, beta, c, ldc):
    """As :func:`gemm_rows` with ``b`` transposed: ``c[:m, :n] = a[:m, :k] @ b[:n, :k].T + beta *
    c[:m, :n]`` (``b`` is ``n`` rows of ``k``, ``ldb`` apart)."""
    target = _block(c, m, n, ldc)
    product = _block(a, m, k, lda) @ _block(b, n, k, ldb).T
    target[...] = product if beta == 0 else product + beta * target


def _compiled(python_function, transpose_b):
    gemm = _gemm_intrinsic(transpose_b)

    @overload(python_function)
    def implementation(m, n, k, a, lda, b, ldb, beta, c, ldc):
        def call(m, n, k, a, lda, b, ldb, beta, c, ldc):
            gemm(m, n, k, a, lda, b, ldb, beta, c, ldc)
        return call


_compiled(gemm_rows, transpose_b=False)
_compiled(gemm_rows_bt, transpose_b=True)


@njit(cache=True)
def matmul(a, b, out):
    """``out = a @ b`` by BLAS GEMM (Numba's ``np.dot``: whole matrices, C- or F-contiguous)."""
    np.dot(a, b, out)


def gemm_blas():
    """threadpoolctl's description (a dict) of the BLAS library whose GEMM :func:`gemm_rows`
    calls (NumPy's OpenBLAS, or the one behind SciPy's ``cython_blas``), or None when
    threadpoolctl finds no BLAS or cannot look (the GEMMs then stay whole: nothing depends on
    knowing)."""
    import scipy.linalg.cython_blas  # noqa: F401 - loaded, so that threadpoolctl sees it
    import threadpoolctl

    try:
        libraries = threadpoolctl.threadpool_info()
    except Exception:  # a library threadpoolctl cannot query: not worth failing a convolution for
        return None
    found = [info for info in libraries if info.get("user_api") == "blas"]
    if _GEMM_LIBRARY is not None:
        chosen = [info for info in found
                  if os.path.realpath(info.get("filepath", "")) == os.path.realpath(_GEMM_LIBRARY)]
    else:
        chosen = [info for info in found if "scipy_openblas" in os.path.basename(info.get("filepath", ""))
                  and "64_" not in info["filepath"]]
    return (chosen or found or [None])[0]


#: OpenBLAS's kernel sets with a small-matrix single-precision GEMM (``SMALL_MATRIX_OPT``)
SMALL_MATRIX_KERNELS = ("SkylakeX", "Cooperlake", "SapphireRapids")


@functools.cache
def small_gemm_limit(dtype):
    """The most multiply-adds (M*N*K) of a GEMM of ``dtype`` that the BLAS runs through a
    small-matrix kernel (no packing of the operands): 1,000,000 for single precision on OpenBLAS
    with its AVX-512 kernels, 0 (none) otherwise. On this library's AVX-512 kernels a GEMM of 32 filters by 288
    taps ran at about 54 GMAC/s on one core in tiles of 96 columns, against 36-43 in one GEMM
    of 1,024 columns; on its AVX2 (Haswell) kernels the same tiles ran slower than one GEMM
    (29 against 30 GMAC/s, and 20-28 against 38-47 for 64 to 128 filters), so they are cut
    only where the small kernels are (``OPENBLAS_CORETYPE`` decides which OpenBLAS runs)."""
    if np.dtype(dtype) != np.float32:
        return 0
    info = gemm_blas()
    if info is None or info.get("internal_api") != "openblas":
        return 0
    return 1_000_000 if info.get("architecture") in SMALL_MATRIX_KERNELS else 0
