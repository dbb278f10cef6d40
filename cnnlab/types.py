"""Type aliases of the public API (a leaf module).

``Array`` is what the ops take and return: a NumPy array (inputs may be anything NumPy converts),
or a GPU array: a Numba device array, a CuPy array, a PyTorch CUDA tensor, anything with
``__cuda_array_interface__``. Those types share no base class, so ``Array`` is ``Any`` for a
type checker; the name says what is meant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy.typing as npt

__all__ = ["Any", "Array", "DaskArray", "DTypeLike", "IntPair", "Padding", "Sequence"]

Array: TypeAlias = Any
IntPair: TypeAlias = int | tuple[int, int]
Padding: TypeAlias = int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] | str
DTypeLike: TypeAlias = npt.DTypeLike
#: a ``dask.array.Array`` (Dask is an optional dependency, so it is not imported here)
DaskArray: TypeAlias = Any
