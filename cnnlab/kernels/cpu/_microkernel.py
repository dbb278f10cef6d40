"""A register-blocked matrix-product kernel written in LLVM vector IR, for convolutions that
read their column matrix straight from the input's planes.

OpenBLAS's GEMM copies ("packs") both matrices into panels of its own on every call. For
convolutions of 16 to 64 filters that copy of the column matrix, itself a copy of the input
(im2col), is a large share of the work: one thread ran the CIFAR-sized convolution at 28 GMAC/s
by im2col and OpenBLAS, where OpenBLAS's inner kernel runs at 42-48. A convolution whose
columns are contiguous runs of its input's planes, one run per tap at the tap's offset, needs
neither copy, if a kernel multiplies straight from those runs; a Numba loop does not give one
(written as loops, LLVM vectorized along the wrong dimension or spilled every accumulator:
1.7-1.9 GMAC/s).

:func:`tap_product` is that kernel, as an intrinsic: ``MR`` rows of the left matrix (filters)
against ``NV`` vectors of columns (output pixels), ``MR * NV`` vector accumulators held in
registers through the whole inner dimension, one fused multiply-add per accumulator and step,
each filter's weight broadcast once a step. The left matrix is packed by :func:`pack_rows`
(blocks of ``MR`` rows, step ``i`` of row ``r`` at ``i * MR + r``); step ``i``'s columns are
read at their own offset (a tap's).

The block follows the processor (:func:`register_block`, read once, at import):

- with AVX-512, 512-bit vectors (16 float32 values) and ``MR = 8``: 24 accumulators of the 32
  vector registers. In a loop over a stride-2 convolution's taps from the L2 cache, one thread
  ran it at 98 GMAC/s, where the 256-bit block below ran at 58 on the same processor and the
  512-bit one with ``MR = 4`` at 82 (``bench/tap_product.py``);
- with AVX2 and FMA, 256-bit vectors (8 float32 or 4 float64 values) and ``MR = 4``: 12 of the
  16 vector registers.

Elsewhere LLVM would split the vectors or call a library's ``fma``, and the callers keep to BLAS
(:func:`available`). Numba's on-disk cache keys each compiled function by the processor's
features, so code compiled for one block is never loaded on a processor that takes the other."""

import functools

import numpy as np
from llvmlite import binding, ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload


def register_block(features=None):
    """``(VECTOR_BYTES, MR, NV)`` for a processor with ``features`` (LLVM's feature names to
    booleans; default this one's): 512-bit vectors and 8 rows with AVX-512 (``avx512f``),
    else 256-bit vectors and 4 rows; 3 vectors of columns either way."""
    features = binding.get_host_cpu_features() if features is None else features
    return (64, 8, 3) if features.get("avx512f") else (32, 4, 3)


#: the vectors' width in bytes, the rows of the left matrix per call (weights broadcast a step)
#: and the vectors of columns per call (:func:`register_block`)
VECTOR_BYTES, MR, NV = register_block()
#: the bytes of columns per :func:`tap_product` call: ``panel_width`` is this over the itemsize
#: (kernels divide it themselves: a call of their own would compile once per array type)
PANEL_BYTES = NV * VECTOR_BYTES


@functools.cache
def available():
    """Whether this processor runs :func:`tap_product`'s vectors and fused multiply-adds
    natively (AVX2 and FMA: every processor with AVX-512 has both)."""
    features = binding.get_host_cpu_features()
    return bool(features.get("avx2")) and bool(features.get("fma"))


def panel_width(dtype_example):
    """Columns per :func:`tap_product` call for arrays of ``dtype_example``'s dtype: ``NV``
    vectors (``PANEL_BYTES // itemsize``)."""
    return PANEL_BYTES // dtype_example.itemsize


def tap_product(a, a_start, b, b_start, offsets, o_start, c, c_start, k, ldc, accumulate):
    """``c[c_start + r * ldc + q] (+)= sum_i a[a_start + i * MR + r] * b[b_start + offsets[o_start + i] + q]``
    for the ``MR`` rows ``r``, the ``panel_width`` columns ``q`` (:func:`panel_width`) and the
    ``k`` steps ``i``, added to what ``c`` holds with ``accumulate`` (a bool), else written over
    it: ``a``, ``b`` and ``c`` flat, of one dtype (float32 or float64), ``offsets`` uint64, all
    C-contiguous. The caller keeps every index in bounds: nothing is checked. Compiled kernels
    run the intrinsic below; called from Python (a kernel run as plain Python, see
    :func:`cnnlab.compilation.interpreting`) it computes the same with NumPy, the steps summed
    in the same order (within rounding: the compiled kernel fuses each multiply and add)."""
    width = panel_width(b)
    sums = np.zeros((MR, width), c.dtype)
    if accumulate:
        for r in range(MR):
            sums[r] = c[c_start + r * ldc:][:width]
    for i in range(k):
        run = b[b_start + int(offsets[o_start + i]):][:width]
        sums += a[a_start + i * MR:][:MR, None] * run[None, :]
    for r in range(MR):
        c[c_start + r * ldc:][:width] = sums[r]


@intrinsic
def _tap_product(typingctx, a, a_start, b, b_start, offsets, o_start, c, c_start, k, ldc, accumulate):
    """:func:`tap_product`, compiled."""
    arrays = (a, b, c)
    if not all(isinstance(t, types.Array) and t.layout == "C" for t in arrays + (offsets,)) \
            or len({t.dtype for t in arrays}) != 1 or a.dtype not in (types.float32, types.float64) \
            or offsets.dtype != types.uint64:
        return None
    signature = types.void(a, types.intp, b, types.intp, offsets, types.intp, c, types.intp, types.intp, types.intp,
                           types.boolean)
    return signature, functools.partial(_tap_product_code, a.dtype)


@overload(tap_product)
def _tap_product_overload(a, a_start, b, b_start, offsets, o_start, c, c_start, k, ldc, accumulate):
    def call(a, a_start, b, b_start, offsets, o_start, c, c_start, k, ldc, accumulate):
        _tap_product(a, a_start, b, b_start, offsets, o_start, c, c_start, k, ldc, bool(accumulate))
    return call


class _Vectors:
    """What both kernels' IR needs: the dtype's scalar and vector (``VECTOR_BYTES``) types, its lanes, the
    64-bit index type, the element alignment (the loads and stores need no more), a constant
    index, and vector loads and stores at an element pointer."""

    def __init__(self, dtype, builder):
        self.builder = builder
        self.scalar = ir.FloatType() if dtype == types.float32 else ir.DoubleType()
        self.lanes = VECTOR_BYTES // (4 if dtype == types.float32 else 8)
        self.vector, self.index = ir.VectorType(self.scalar, self.lanes), ir.IntType(64)
        self.align = 4 if dtype == types.float32 else 8

    def at(self, value):
        return ir.Constant(self.index, value)

    def load(self, pointer):
        return self.builder.load(self.builder.bitcast(pointer, self.vector.as_pointer()), align=self.align)

    def store(self, value, pointer):
        self.builder.store(value, self.builder.bitcast(pointer, self.vector.as_pointer()), align=self.align)


def _summing_loop(vectors, count, accumulators, step_sums, initial=None):
    """Build ``for step in range(count)`` (none when ``count`` is not positive) with
    ``accumulators`` vector sums that start at ``initial`` (vectors; zeros when None), as phi
    nodes: ``step_sums(step, sums)`` emits one step and returns the updated sums. Returns the
    sums after the loop, with the builder placed after it."""
    builder = vectors.builder
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vectors.vector, [vectors.vector] * 3),
                                         f"llvm.fma.v{vectors.lanes}{vectors.scalar.intrinsic_name}")
    zero = ir.Constant(vectors.vector, [0.0] * vectors.lanes)
    initial = [zero] * accumulators if initial is None else initial
    entry = builder.block
    loop = builder.function.append_basic_block("sums.loop")
    done = builder.function.append_basic_block("sums.done")
    builder.cbranch(builder.icmp_signed(">", count, vectors.at(0)), loop, done)

    builder.position_at_end(loop)
    step = builder.phi(vectors.index)
    step.add_incoming(vectors.at(0), entry)
    sums = [builder.phi(vectors.vector) for _ in range(accumulators)]
    for total, start in zip(sums, initial):
        total.add_incoming(start, entry)
    updated = step_sums(step, sums, lambda x, y, total: builder.call(fma, [x, y, total]))
    following = builder.add(step, vectors.at(1))
    step.add_incoming(following, loop)
    for total, value in zip(sums, updated):
        total.add_incoming(value, loop)
    builder.cbranch(builder.icmp_signed("<", following, count), loop, done)

    builder.position_at_end(done)
    finals = [builder.phi(vectors.vector) for _ in updated]  # (a block's phi nodes come first)
    for final, value, start in zip(finals, updated, initial):
        final.add_incoming(start, entry)
        final.add_incoming(value, loop)
    return finals


def _tap_product_code(dtype, context, builder, signature, args):
    """:func:`tap_product`'s IR: one loop over the steps, its accumulators phi nodes that start
    at zero or, with ``accumulate``, at what ``c`` holds."""
    a, a_start, b, b_start, steps, o_start, c, c_start, k, ldc, accumulate = args
    v = _Vectors(dtype, builder)

    def data(position, value):
        return context.make_array(signature.args[position])(context, builder, value).data

    pa, pb = builder.gep(data(0, a), [a_start]), builder.gep(data(2, b), [b_start])
    pc, step_offsets = builder.gep(data(6, c), [c_start]), builder.gep(data(4, steps), [o_start])
    rows = [builder.gep(pc, [builder.mul(ldc, v.at(r))]) for r in range(MR)]
    spread_mask = ir.Constant(ir.VectorType(ir.IntType(32), v.lanes), [0] * v.lanes)
    undefined = ir.Constant(v.vector, ir.Undefined)
    zero = ir.Constant(v.vector, [0.0] * v.lanes)
    # what c holds (loaded either way: the stores below write the same places), or zeros
    initial = [builder.select(accumulate, v.load(builder.gep(row, [v.at(n * v.lanes)])), zero)
               for row in rows for n in range(NV)]

    def step_sums(step, sums, fma):
        run = builder.gep(pb, [builder.load(builder.gep(step_offsets, [step]))])
        columns = [v.load(builder.gep(run, [v.at(n * v.lanes)])) for n in range(NV)]
        weights = builder.gep(pa, [builder.mul(step, v.at(MR))])
        updated = []
        for r in range(MR):
            weight = builder.load(builder.gep(weights, [v.at(r)]))
            spread = builder.shuffle_vector(builder.insert_element(undefined, weight, ir.Constant(ir.IntType(32), 0)),
                                            undefined, spread_mask)
            updated.extend(fma(spread, columns[n], sums[r * NV + n]) for n in range(NV))
        return updated

    finals = _summing_loop(v, k, MR * NV, step_sums, initial)
    for r in range(MR):
        for n in range(NV):
            v.store(finals[r * NV + n], builder.gep(rows[r], [v.at(n * v.lanes)]))
    return context.get_dummy_value()


#: filters (rows of the output gradient) per :func:`tap_dots` call
DOT_ROWS = 4
#: taps per :func:`tap_dots` call
DOT_TAPS = 3


def tap_dots(g, g_start, ldg, b, b_start, offsets, o_start, sums, s_start, vectors):
    """``sums[s_start + (r * DOT_TAPS + t) * lanes + l] += sum_v g[g_start + r * ldg + v * lanes + l]
    * b[b_start + offsets[o_start + t] + v * lanes + l]`` for the ``DOT_ROWS`` rows ``r``, the
    ``DOT_TAPS`` taps ``t``, the ``lanes`` lanes ``l`` of a vector (:func:`panel_width` / ``NV``)
    and ``v`` below ``vectors``: a weight gradient's dot products of output-gradient rows with
    taps' runs of the input planes, kept lane by lane (the caller adds the lanes up once, at
    the end). ``g``, ``b`` and ``sums`` flat, of one dtype (float32 or float64), ``offsets``
    uint64, all C-contiguous; nothing is checked. Compiled kernels run the intrinsic below; from
    Python (kernels run interpreted) NumPy computes the same, within rounding."""
    lanes = panel_width(b) // NV
    for r in range(DOT_ROWS):
        row = g[g_start + r * ldg:][:vectors * lanes].reshape(vectors, lanes)
        for t in range(DOT_TAPS):
            run = b[b_start + int(offsets[o_start + t]):][:vectors * lanes].reshape(vectors, lanes)
            sums[s_start + (r * DOT_TAPS + t) * lanes:][:lanes] += (row * run).sum(axis=0)


@intrinsic
def _tap_dots(typingctx, g, g_start, ldg, b, b_start, offsets, o_start, sums, s_start, vectors):
    """:func:`tap_dots`, compiled."""
    arrays = (g, b, sums)
    if not all(isinstance(t, types.Array) and t.layout == "C" for t in arrays + (offsets,)) \
            or len({t.dtype for t in arrays}) != 1 or g.dtype not in (types.float32, types.float64) \
            or offsets.dtype != types.uint64:
        return None
    signature = types.void(g, types.intp, types.intp, b, types.intp, offsets, types.intp, sums, types.intp,
                           types.intp)
    return signature, functools.partial(_tap_dots_code, g.dtype)


@overload(tap_dots)
def _tap_dots_overload(g, g_start, ldg, b, b_start, offsets, o_start, sums, s_start, vectors):
    def call(g, g_start, ldg, b, b_start, offsets, o_start, sums, s_start, vectors):
        _tap_dots(g, g_start, ldg, b, b_start, offsets, o_start, sums, s_start, vectors)
    return call


def _tap_dots_code(dtype, context, builder, signature, args):
    """:func:`tap_dots`'s IR: one loop over the vectors, ``DOT_ROWS * DOT_TAPS`` vector sums as
    phi nodes, each added to its lanes of ``sums`` at the end."""
    g, g_start, ldg, b, b_start, steps, o_start, sums, s_start, vectors = args
    v = _Vectors(dtype, builder)

    def data(position, value):
        return context.make_array(signature.args[position])(context, builder, value).data

    rows = [builder.gep(data(0, g), [builder.add(g_start, builder.mul(ldg, v.at(r)))]) for r in range(DOT_ROWS)]
    planes, offsets = data(3, b), builder.gep(data(5, steps), [o_start])
    runs = [builder.gep(planes, [builder.add(b_start, builder.load(builder.gep(offsets, [v.at(t)])))])
            for t in range(DOT_TAPS)]
    pt = builder.gep(data(7, sums), [s_start])

    def step_sums(step, totals, fma):
        at = builder.mul(step, v.at(v.lanes))
        gradients = [v.load(builder.gep(row, [at])) for row in rows]
        columns = [v.load(builder.gep(run, [at])) for run in runs]
        return [fma(gradients[r], columns[t], totals[r * DOT_TAPS + t]) for r in range(DOT_ROWS)
                for t in range(DOT_TAPS)]

    for position, final in enumerate(_summing_loop(v, vectors, DOT_ROWS * DOT_TAPS, step_sums)):
        target = builder.gep(pt, [v.at(position * v.lanes)])
        v.store(builder.fadd(v.load(target), final), target)
    return context.get_dummy_value()


@njit(cache=True)
def pack_rows(matrix, packed):
    """``matrix`` (M, K) into ``packed`` (``ceil(M / MR) * MR * K`` values) in
    :func:`tap_product`'s layout of the left matrix: blocks of ``MR`` rows, step ``i`` of row
    ``r`` at ``i * MR + r``; rows past ``M`` zero."""
    m, k = matrix.shape
    for block in range((m + MR - 1) // MR):
        base = block * MR * k
        for r in range(MR):
            row = block * MR + r
            for i in range(k):
                packed[base + i * MR + r] = matrix[row, i] if row < m else 0


__all__ = ["DOT_ROWS", "DOT_TAPS", "MR", "NV", "PANEL_BYTES", "VECTOR_BYTES", "available", "pack_rows", "panel_width",
           "register_block", "tap_dots", "tap_product"]
