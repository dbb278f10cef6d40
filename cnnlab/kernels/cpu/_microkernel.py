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
from numba.np import numpy_support


def register_block(features=None):
    """``(VECTOR_BYTES, MR, NV)`` for a processor with ``features`` (LLVM's feature names to
    booleans; default this one's): 512-bit vectors and 8 rows with AVX-512 (``avx512f``),
    else 256-bit vectors and 4 rows; 3 vectors of columns either way."""
    features = binding.get_host_cpu_features() if features is None else features
    return (64, 8, 3) if features.get("avx512f") else (32, 4, 3)


def halved_vectors(name=None):
    """Whether the processor LLVM names ``name`` (default this one) runs 512-bit vectors as two
    256-bit halves: AMD's Zen 4 (``'znver4'``), whose AVX-512 instructions each take two passes
    through 256-bit units. Intel's AVX-512 processors and AMD's Zen 5 run them whole."""
    return (binding.get_host_cpu_name() if name is None else name) == "znver4"


#: whether this processor's 512-bit vectors are two 256-bit halves (:func:`halved_vectors`)
HALVED_VECTORS = halved_vectors()

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


def tap_rows(a, a_start, a_row, a_step, rows, b, b_start, offsets, o_start, columns, c, c_start, ldc, k,
             accumulate, scale, shift, s_start, residual, r_start, finish, has_residual, clip, low, high):
    """``c[c_start + r * ldc + q] (+)= sum_i a[a_start + r * a_row + i * a_step] * b[b_start +
    offsets[o_start + i] + q]`` for the rows ``r`` below ``rows`` (1 to ``MR``), the columns
    ``q`` below ``columns`` (from one vector's lanes to :func:`panel_width`) and the ``k`` steps
    ``i``, added to what ``c`` holds with ``accumulate``, else written over it: :func:`tap_product`
    onto rows of an output as they lie, finished as they are written, the left matrix read with
    any two strides (a 1x1 convolution's weights as they lie: ``a_row`` the channels,
    ``a_step`` 1; weights packed by :func:`pack_rows`: 1 and ``MR``).

    With ``finish``, each sum ``v`` of row ``r`` is written finished, as the convolution
    epilogue's clip case computes it (:func:`cnnlab.kernels.cpu._epilogue._finish_row`):
    ``scale[s_start + r] * v + shift[s_start + r]``, plus ``residual[r_start + r * ldc + q]``
    with ``has_residual``, then clipped to ``[low, high]`` (rounded to the dtype) with ``clip``.
    Every value of ``c`` and of the residual is read before any is written, so the residual
    may be ``c`` itself (pass ``c`` where there is none: it is read, not used).

    No mask and no copy for a part block: a row past ``rows`` repeats the last row, and the last
    vector of columns starts ``columns - lanes`` in, over lanes the vector before it computed
    too; both compute the same values as the first time, in the same order, and write them
    again. ``a``, ``b``, ``c``, ``scale``, ``shift`` and ``residual`` flat, of one dtype (float32
    or float64), ``offsets`` uint64, all C-contiguous; the caller keeps every index in bounds.
    Compiled kernels run the intrinsic below; from Python (kernels run interpreted) NumPy
    computes the same, within rounding."""
    lo, hi = c.dtype.type(low), c.dtype.type(high)
    finished = np.empty((rows, columns), c.dtype)
    for r in range(rows):
        sums = c[c_start + r * ldc:][:columns].copy() if accumulate else np.zeros(columns, c.dtype)
        for i in range(k):
            sums += a[a_start + r * a_row + i * a_step] * b[b_start + int(offsets[o_start + i]):][:columns]
        if finish:
            sums = scale[s_start + r] * sums + shift[s_start + r]
            if has_residual:
                sums = sums + residual[r_start + r * ldc:][:columns]
            if clip:
                sums = np.where(sums < lo, lo, np.where(sums > hi, hi, sums))
        finished[r] = sums
    for r in range(rows):
        c[c_start + r * ldc:][:columns] = finished[r]


@intrinsic
def _tap_rows(typingctx, a, a_start, a_row, a_step, rows, b, b_start, offsets, o_start, columns, c, c_start, ldc, k,
              accumulate, scale, shift, s_start, residual, r_start, finish, has_residual, clip, low, high):
    """:func:`tap_rows`, compiled (``low`` and ``high`` of the arrays' dtype)."""
    arrays = (a, b, c, scale, shift, residual)
    if not all(isinstance(t, types.Array) and t.layout == "C" for t in arrays + (offsets,)) \
            or len({t.dtype for t in arrays}) != 1 or a.dtype not in (types.float32, types.float64) \
            or offsets.dtype != types.uint64 or low != a.dtype or high != a.dtype:
        return None
    i, flag = types.intp, types.boolean
    signature = types.void(a, i, i, i, i, b, i, offsets, i, i, c, i, i, i, flag, scale, shift, i, residual, i, flag,
                           flag, flag, a.dtype, a.dtype)
    return signature, functools.partial(_tap_rows_code, a.dtype)


@overload(tap_rows)
def _tap_rows_overload(a, a_start, a_row, a_step, rows, b, b_start, offsets, o_start, columns, c, c_start, ldc, k,
                       accumulate, scale, shift, s_start, residual, r_start, finish, has_residual, clip, low, high):
    to_dtype = numpy_support.as_dtype(a.dtype).type

    def call(a, a_start, a_row, a_step, rows, b, b_start, offsets, o_start, columns, c, c_start, ldc, k, accumulate,
             scale, shift, s_start, residual, r_start, finish, has_residual, clip, low, high):
        _tap_rows(a, a_start, a_row, a_step, rows, b, b_start, offsets, o_start, columns, c, c_start, ldc, k,
                  bool(accumulate), scale, shift, s_start, residual, r_start, bool(finish), bool(has_residual),
                  bool(clip), to_dtype(low), to_dtype(high))
    return call


def _when(builder, flag, otherwise, values):
    """``values()`` (IR values it emits) where the i1 ``flag`` holds, else the values ``otherwise``
    (emitted before): a branch, and a phi node for each value after it."""
    entry = builder.block
    with builder.if_then(flag):
        made = values()
        made_in = builder.block
    merged = []
    for made_value, other in zip(made, otherwise):
        phi = builder.phi(other.type)
        phi.add_incoming(other, entry)
        phi.add_incoming(made_value, made_in)
        merged.append(phi)
    return merged


def _tap_rows_code(dtype, context, builder, signature, args):
    """:func:`tap_rows`'s IR: one loop for each count of vectors (1 to ``NV``), the call's count
    chosen at run time, its accumulators phi nodes that start at zero or at what ``c`` holds,
    then the epilogue (selects on its flags) and the stores."""
    (a, a_start, a_row, a_step, rows, b, b_start, steps, o_start, columns, c, c_start, ldc, k, accumulate, scale,
     shift, s_start, residual, r_start, finish, has_residual, clip, low, high) = args
    v = _Vectors(dtype, builder)

    def data(position, value):
        return context.make_array(signature.args[position])(context, builder, value).data

    pa, pb = builder.gep(data(0, a), [a_start]), builder.gep(data(5, b), [b_start])
    pc, step_offsets = builder.gep(data(10, c), [c_start]), builder.gep(data(7, steps), [o_start])
    last_row = builder.sub(rows, v.at(1))
    row_at = [builder.select(builder.icmp_signed("<", v.at(r), rows), v.at(r), last_row) for r in range(MR)]
    weight_rows = [builder.gep(pa, [builder.mul(at, a_row)]) for at in row_at]
    out_rows = [builder.gep(pc, [builder.mul(at, ldc)]) for at in row_at]
    pr = builder.gep(data(18, residual), [r_start])
    residual_rows = [builder.gep(pr, [builder.mul(at, ldc)]) for at in row_at]
    scales, shifts = builder.gep(data(15, scale), [s_start]), builder.gep(data(16, shift), [s_start])
    last_vector = builder.sub(columns, v.at(v.lanes))
    starts = [builder.select(builder.icmp_signed("<", v.at(n * v.lanes), last_vector), v.at(n * v.lanes), last_vector)
              for n in range(NV)]
    spread_mask = ir.Constant(ir.VectorType(ir.IntType(32), v.lanes), [0] * v.lanes)
    undefined = ir.Constant(v.vector, ir.Undefined)
    zero = ir.Constant(v.vector, [0.0] * v.lanes)

    def spread(value):
        return builder.shuffle_vector(builder.insert_element(undefined, value, ir.Constant(ir.IntType(32), 0)),
                                      undefined, spread_mask)

    low_v, high_v = spread(low), spread(high)

    def finished(totals, count):  # (every residual value read before any store)
        scaled = [builder.fadd(builder.fmul(spread(builder.load(builder.gep(scales, [row_at[r]]))), totals[r * count + n]),
                               spread(builder.load(builder.gep(shifts, [row_at[r]]))))
                  for r in range(MR) for n in range(count)]
        added = _when(builder, has_residual, scaled, lambda: [
            builder.fadd(scaled[r * count + n], v.load(builder.gep(residual_rows[r], [starts[n]])))
            for r in range(MR) for n in range(count)])
        return [builder.select(clip, builder.select(builder.fcmp_ordered("<", value, low_v), low_v,
                                                    builder.select(builder.fcmp_ordered(">", value, high_v), high_v,
                                                                   value)), value) for value in added]

    vectors = builder.udiv(builder.add(columns, v.at(v.lanes - 1)), v.at(v.lanes))
    done = builder.function.append_basic_block("rows.done")
    cases = [builder.function.append_basic_block(f"rows.{n}") for n in range(1, NV + 1)]
    switch = builder.switch(vectors, cases[-1])
    for n, case in enumerate(cases[:-1], 1):
        switch.add_case(v.at(n), case)
    for count, case in enumerate(cases, 1):
        builder.position_at_end(case)
        initial = _when(builder, accumulate, [zero] * (MR * count),
                        lambda count=count: [v.load(builder.gep(out_rows[r], [starts[n]])) for r in range(MR)
                                             for n in range(count)])

        def step_sums(step, sums, fma, count=count):
            run = builder.gep(pb, [builder.load(builder.gep(step_offsets, [step]))])
            columns_now = [v.load(builder.gep(run, [starts[n]])) for n in range(count)]
            at = builder.mul(step, a_step)
            updated = []
            for r in range(MR):
                weight = spread(builder.load(builder.gep(weight_rows[r], [at])))
                updated.extend(fma(weight, columns_now[n], sums[r * count + n]) for n in range(count))
            return updated

        totals = _summing_loop(v, k, MR * count, step_sums, initial)
        values = _when(builder, finish, totals, lambda totals=totals, count=count: finished(totals, count))
        for r in range(MR):
            for n in range(count):
                v.store(values[r * count + n], builder.gep(out_rows[r], [starts[n]]))
        builder.branch(done)
    builder.position_at_end(done)
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


@njit(cache=True)
def window_offsets(offsets, kernel_h, kernel_w, dilation_h, dilation_w, plane_h, line, scale):
    """``offsets[t]`` for each tap ``t`` of a window (channel-major, as a weight's row: channel
    ``c``, window row ``i`` and column ``j``), the tap's place from the window's first value,
    ``((c * plane_h + i * dilation_h) * line + j * dilation_w) * scale``: in planes of
    ``plane_h`` rows ``line`` values apart, each position ``scale`` values (the samples laid
    innermost) or one. The taps' offsets that :func:`tap_product` and the tiles' and strips'
    kernels take."""
    window = kernel_h * kernel_w
    for t in range(offsets.shape[0]):
        c, i, j = t // window, (t // kernel_w) % kernel_h, t % kernel_w
        offsets[t] = ((c * plane_h + i * dilation_h) * line + j * dilation_w) * scale


#: MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6) flags
FLUSH_FLAGS = 0x8040


def _x86():
    """Whether the code is compiled for an x86 processor (MXCSR is x86's)."""
    return binding.get_default_triple().startswith(("x86_64", "i386", "i686"))


def _mxcsr(builder, write=None):
    """Read MXCSR (``write`` None) or write ``write`` (an i32) into it; returns the i32 read or
    written."""
    i32, i8p = ir.IntType(32), ir.IntType(8).as_pointer()
    slot = cgutils.alloca_once(builder, i32)
    name = "llvm.x86.sse.stmxcsr" if write is None else "llvm.x86.sse.ldmxcsr"
    function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p]), name)
    if write is not None:
        builder.store(write, slot)
    builder.call(function, [builder.bitcast(slot, i8p)])
    return builder.load(slot)


def flush_denormals():
    """Set this thread's denormals-are-zero and flush-to-zero flags (x86's MXCSR) and return
    the control word before, for :func:`restore_denormals`; off x86, nothing (0). Called from
    Python (a kernel run as plain Python), it sets nothing: NumPy computes as it does.

    Every forward convolution's items run between the two (the thread's own setting back
    when they end): a denormal input (below 1.2e-38 in float32) counts as zero, and a result
    that would be denormal is zero. Each multiply-add with a denormal operand costs the
    processor a microcode assist of about a hundred cycles: PP-OCRv6's small text detector on
    a random 224x224 image feeds its 768-to-384 1x1 convolution at 7x7 with 24 thousand
    denormals of 38 thousand inputs (its GELU's outputs far below zero), and that one layer took
    19.3 ms of the network's 35 (0.16 ms with the flags; the network 13.9 ms). onnxruntime
    offers the same (``session.set_denormal_as_zero``): 22.0 -> 6.4 ms on that image, and
    PyTorch ``torch.set_flush_denormal``; TensorFlow sets them in its threads."""
    return 0


def restore_denormals(before):
    """Put back the control word :func:`flush_denormals` returned (off x86, or from Python,
    nothing)."""


@intrinsic
def _flush_denormals(typingctx):
    """:func:`flush_denormals`, compiled."""
    def codegen(context, builder, signature, args):
        if not _x86():
            return ir.Constant(ir.IntType(32), 0)
        before = _mxcsr(builder)
        _mxcsr(builder, builder.or_(before, ir.Constant(ir.IntType(32), FLUSH_FLAGS)))
        return before
    return types.uint32(), codegen


@intrinsic
def _restore_denormals(typingctx, before):
    """:func:`restore_denormals`, compiled."""
    def codegen(context, builder, signature, args):
        if _x86():
            _mxcsr(builder, args[0])
        return context.get_dummy_value()
    return types.void(types.uint32), codegen


@overload(flush_denormals)
def _flush_denormals_overload():
    return lambda: _flush_denormals()


@overload(restore_denormals)
def _restore_denormals_overload(before):
    return lambda before: _restore_denormals(before)


__all__ = ["DOT_ROWS", "DOT_TAPS", "FLUSH_FLAGS", "MR", "NV", "PANEL_BYTES", "VECTOR_BYTES", "available",
           "flush_denormals", "pack_rows", "panel_width", "register_block", "restore_denormals", "tap_dots", "tap_product",
           "tap_rows", "window_offsets"]
