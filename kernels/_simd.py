"""SIMD micro-kernels that plain Numba loops do not compile well, written as Numba intrinsics in
LLVM IR.

:func:`gemm_int16_pairs_4x16` (and its 6-row twin) is the int8 GEMM's inner kernel
(kernels/quant.py). It computes a tile of 4 rows x 16 columns of int32 sums over K = 2 * k2::

    acc[c_off + i * c_stride + j] = sum_p a[a_i + 2p] * b[b_off + p * b_stride + 2j]
                                        + a[a_i + 2p + 1] * b[b_off + p * b_stride + 2j + 1]

for i < 4, j < 16, a_i = a_off + i * a_stride

with a and b int16 (int8 values widened), the pair (k = 2p, 2p + 1) adjacent in both operands:
a row holds its K values in order, b holds for each pair p the 16 columns' pairs, interleaved.
Per pair: one 32-bit load of each of the 4 rows' pair, broadcast to 8 lanes; two loads of 16
int16 from b; 8 pairwise multiply-adds into 8 vectors of 8 int32 that stay in registers for the
whole loop (no horizontal sums). The multiply-add is written in generic LLVM IR (sign-extend both
<16 x i16> to <16 x i32>, multiply, add the even and odd lanes), which LLVM's x86 backend
selects as one ``vpmaddwd`` (AVX2) and other targets lower to their own widening multiplies.
int16 * int16 pairs of int8 values cannot overflow: |a*b + c*d| <= 2 * 128 * 128 = 2**15.

:data:`gemm_u8s8_4x16_rows_unsigned` and :data:`gemm_u8s8_4x16_rows_signed` are the same tile
on int8 operands in quads of K values (fbgemm's AVX2 scheme): ``vpmaddubsw`` (one operand read
as unsigned, pair sums saturating to int16) + ``vpmaddwd`` with a vector of ones + ``vpaddd``,
through the x86 intrinsics themselves (generic IR for the saturating pair sum is not matched);
compiled only where :data:`HAS_AVX2`.

:data:`gemm_f32_4x16` is the float32 tile, 4 rows x 16 columns of sums of products over the
``depth`` terms, accumulated in 8 vectors of 8 floats by LLVM's ``fmuladd`` (one FMA where the
target has it, generic IR elsewhere), one operand read with any row and term strides (so op(a) may
be a transpose): the register-tiled GEMM of ``_blas.gemm_in_cache``. All three tiles share one
loop skeleton (:func:`_accumulate`) and one store (:func:`_store_rows`).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

COLS = 16  # a tile's width: two 8-lane int32 vectors (one AVX2 register each)

_I16, _I32, _I64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
_V16I16 = ir.VectorType(_I16, 16)
_V16I32 = ir.VectorType(_I32, 16)
_V8I32 = ir.VectorType(_I32, 8)


def _const_vector(values):
    values = list(values)
    return ir.Constant(ir.VectorType(_I32, len(values)), values)


_EVEN = _const_vector(range(0, 16, 2))
_ODD = _const_vector(range(1, 16, 2))
_ZEROS8 = _const_vector([0] * 8)


def _madd_pairs(builder, x, y):
    """<8 x i32>: x[2i] * y[2i] + x[2i+1] * y[2i+1] for <16 x i16> x and y (vpmaddwd)."""
    products = builder.mul(builder.sext(x, _V16I32), builder.sext(y, _V16I32))
    even = builder.shuffle_vector(products, products, _EVEN)
    odd = builder.shuffle_vector(products, products, _ODD)
    return builder.add(even, odd)


def _data(context, builder, array_type, value):
    return cgutils.create_struct_proxy(array_type)(context, builder, value=value).data


def _accumulate(builder, count, sums_count, zeros, body):
    """The loop every tile runs: for p in 0..count-1, ``body(p, sums)`` gives the next values of
    ``sums_count`` accumulator vectors, which start at ``zeros`` and stay in registers; returns
    their final values (``zeros`` when count <= 0)."""
    entry = builder.block
    loop = builder.append_basic_block("terms.loop")
    done = builder.append_basic_block("terms.done")
    zero = ir.Constant(_I64, 0)
    builder.cbranch(builder.icmp_signed(">", count, zero), loop, done)

    builder.position_at_end(loop)
    p = builder.phi(_I64)
    p.add_incoming(zero, entry)
    sums = []
    for _ in range(sums_count):
        phi = builder.phi(zeros.type)
        phi.add_incoming(zeros, entry)
        sums.append(phi)
    new_sums = body(p, sums)
    latch = builder.block
    p_next = builder.add(p, ir.Constant(_I64, 1))
    p.add_incoming(p_next, latch)
    for phi, value in zip(sums, new_sums, strict=True):
        phi.add_incoming(value, latch)
    builder.cbranch(builder.icmp_signed("<", p_next, count), loop, done)

    builder.position_at_end(done)
    finals = []
    for value in new_sums:  # phis first: LLVM wants them at the top of the block
        final = builder.phi(zeros.type)
        final.add_incoming(zeros, entry)
        final.add_incoming(value, latch)
        finals.append(final)
    return finals


def _two_vectors(builder, row, vector_type, align):
    """The two vectors of ``vector_type`` that start at ``row`` (a pointer to their elements)."""
    lanes = vector_type.count
    return [
        builder.load(
            builder.bitcast(
                builder.gep(row, [ir.Constant(_I64, lanes * h)]), vector_type.as_pointer()
            ),
            align=align,
        )
        for h in range(2)
    ]


def _broadcast(builder, scalar, vector_type):
    """``scalar`` in every lane of an 8-lane ``vector_type`` (an i32 scalar reinterpreted as
    vector_type's bytes when the lanes are narrower)."""
    lanes = ir.VectorType(scalar.type, 8)
    splat = builder.insert_element(ir.Constant(lanes, ir.Undefined), scalar, ir.Constant(_I32, 0))
    splat = builder.shuffle_vector(splat, splat, _ZEROS8)
    return splat if lanes == vector_type else builder.bitcast(splat, vector_type)


def _store_rows(builder, finals, c_data, c_off, c_stride):
    """Store a tile's accumulators, two vectors a row: row i at c_data[c_off + i * c_stride:]."""
    lanes = finals[0].type.count
    for index, final in enumerate(finals):
        i, h = divmod(index, 2)
        offset = builder.add(c_off, builder.mul(c_stride, ir.Constant(_I64, i)))
        offset = builder.add(offset, ir.Constant(_I64, lanes * h))
        pointer = builder.bitcast(builder.gep(c_data, [offset]), final.type.as_pointer())
        builder.store(final, pointer, align=4)


def _tile_intrinsic(ROWS):
    """The intrinsic for tiles of ROWS x COLS."""

    @intrinsic
    def gemm_tile(typingctx, a, a_off, a_stride, b, b_off, b_stride, k2, acc, c_off, c_stride):
        return _tile_signature(
            ROWS, a, a_off, a_stride, b, b_off, b_stride, k2, acc, c_off, c_stride
        )

    return gemm_tile


def _tile_signature(ROWS, a, a_off, a_stride, b, b_off, b_stride, k2, acc, c_off, c_stride):
    for array, dtype in ((a, types.int16), (b, types.int16), (acc, types.int32)):
        if not isinstance(array, types.Array) or array.dtype != dtype:
            return None
    sig = types.void(a, a_off, a_stride, b, b_off, b_stride, k2, acc, c_off, c_stride)

    def codegen(context, builder, signature, args):
        a_arr, _, _, b_arr, _, _, _, acc_arr, _, _ = args
        arg_types = signature.args

        def intp(index):
            return context.cast(builder, args[index], arg_types[index], types.intp)

        a_off_v, a_stride_v = intp(1), intp(2)
        b_off_v, b_stride_v, k2_v = intp(4), intp(5), intp(6)
        c_off_v, c_stride_v = intp(8), intp(9)
        a_data = _data(context, builder, arg_types[0], a_arr)
        b_data = _data(context, builder, arg_types[3], b_arr)
        acc_data = _data(context, builder, arg_types[7], acc_arr)
        # each row's pairs as i32 (two adjacent int16)
        rows = []
        for i in range(ROWS):
            offset = builder.add(a_off_v, builder.mul(a_stride_v, ir.Constant(_I64, i)))
            rows.append(builder.bitcast(builder.gep(a_data, [offset]), _I32.as_pointer()))
        b_base = builder.gep(b_data, [b_off_v])

        def pairs(p, sums):
            b_pair = builder.gep(b_base, [builder.mul(p, b_stride_v)])
            halves = _two_vectors(builder, b_pair, _V16I16, 2)
            new_sums = []
            for i in range(ROWS):
                pair = builder.load(builder.gep(rows[i], [p]), align=2)
                splat = _broadcast(builder, pair, _V16I16)
                for h in range(2):
                    new_sums.append(
                        builder.add(sums[2 * i + h], _madd_pairs(builder, splat, halves[h]))
                    )
            return new_sums

        finals = _accumulate(builder, k2_v, 2 * ROWS, _ZEROS8, pairs)
        _store_rows(builder, finals, acc_data, c_off_v, c_stride_v)
        return context.get_dummy_value()

    return sig, codegen


#: The ROWS x 16 tile described in the module docstring into acc (int32): row i of the tile at
#: acc[c_off + i * c_stride:][:16]; offsets and strides count elements; a and b int16 arrays.
gemm_int16_pairs_4x16 = _tile_intrinsic(4)
gemm_int16_pairs_6x16 = _tile_intrinsic(6)


# ---------------------------------------------------------------------------------------------
# The u8 x s8 tile (AVX2 only): fbgemm's vpmaddubsw + vpmaddwd(ones) + vpaddd, four k at a time.

_I8 = ir.IntType(8)
_V32I8 = ir.VectorType(_I8, 32)
_ONES16 = ir.Constant(_V16I16, [1] * 16)


def _host_has_avx2() -> bool:
    """True when Numba compiles for this host and the host has AVX2 (the x86 intrinsics below
    cannot be selected for another target)."""
    import numba

    if numba.config.CPU_NAME not in (None, "host") or numba.config.CPU_FEATURES:
        return False
    try:
        from llvmlite import binding

        return bool(binding.get_host_cpu_features().get("avx2", False))
    except Exception:  # noqa: BLE001 -- no feature map (not x86): the portable path runs
        return False


#: Whether :data:`gemm_u8s8_4x16_rows_signed` and :data:`gemm_u8s8_4x16_rows_unsigned` may be
#: compiled on this host.
HAS_AVX2 = _host_has_avx2()


def _x86(builder, name, return_type, *args):
    function_type = ir.FunctionType(return_type, [arg.type for arg in args])
    function = cgutils.get_or_insert_function(builder.module, function_type, name)
    return builder.call(function, list(args))


def _u8s8_tile_intrinsic(ROWS, rows_unsigned):
    """ROWS x COLS int32 sums over K = 4 * k4 of int8 operands in quads:

        acc[c_off + i * c_stride + j] =
            sum_q sum_h a[a_i + 4q + h] * b[b_off + q * b_stride + 4j + h]

    the rows operand a (row i at a_off + i * a_stride) broadcast one quad (an i32) at a time,
    b's quad q the 16 columns' 4 bytes each (two 32-byte loads). One operand is read as unsigned
    (vpmaddubsw's first): the rows when ``rows_unsigned`` (the linear layer: a's activations),
    else the columns (the convolution: im2col'd activations). Exact when the unsigned operand is
    in [0, 127] and the signed one in [-127, 127] (a pair sum stays below 2**15 - 1)."""

    @intrinsic
    def gemm_tile(typingctx, a, a_off, a_stride, b, b_off, b_stride, k4, acc, c_off, c_stride):
        for array, dtype in ((a, types.int8), (b, types.int8), (acc, types.int32)):
            if not isinstance(array, types.Array) or array.dtype != dtype:
                return None
        sig = types.void(a, a_off, a_stride, b, b_off, b_stride, k4, acc, c_off, c_stride)
        return sig, codegen

    def codegen(context, builder, signature, args):
        return _u8s8_codegen(ROWS, rows_unsigned, context, builder, signature, args)

    return gemm_tile


def _u8s8_codegen(ROWS, rows_unsigned, context, builder, signature, args):
    a_arr, _, _, b_arr, _, _, _, acc_arr, _, _ = args
    arg_types = signature.args

    def intp(index):
        return context.cast(builder, args[index], arg_types[index], types.intp)

    a_off_v, a_stride_v = intp(1), intp(2)
    b_off_v, b_stride_v, k4_v = intp(4), intp(5), intp(6)
    c_off_v, c_stride_v = intp(8), intp(9)
    a_data = _data(context, builder, arg_types[0], a_arr)
    b_data = _data(context, builder, arg_types[3], b_arr)
    acc_data = _data(context, builder, arg_types[7], acc_arr)
    rows = []
    for i in range(ROWS):
        offset = builder.add(a_off_v, builder.mul(a_stride_v, ir.Constant(_I64, i)))
        rows.append(builder.bitcast(builder.gep(a_data, [offset]), _I32.as_pointer()))
    b_base = builder.gep(b_data, [b_off_v])

    def quads(q, sums):
        b_quad = builder.gep(b_base, [builder.mul(q, b_stride_v)])
        halves = _two_vectors(builder, b_quad, _V32I8, 1)
        new_sums = []
        for i in range(ROWS):
            quad = builder.load(builder.gep(rows[i], [q]), align=1)
            splat = _broadcast(builder, quad, _V32I8)
            for h in range(2):
                unsigned, signed = (splat, halves[h]) if rows_unsigned else (halves[h], splat)
                pairs = _x86(builder, "llvm.x86.avx2.pmadd.ub.sw", _V16I16, unsigned, signed)
                quads = _x86(builder, "llvm.x86.avx2.pmadd.wd", _V8I32, pairs, _ONES16)
                new_sums.append(builder.add(sums[2 * i + h], quads))
        return new_sums

    finals = _accumulate(builder, k4_v, 2 * ROWS, _ZEROS8, quads)
    _store_rows(builder, finals, acc_data, c_off_v, c_stride_v)
    return context.get_dummy_value()


#: The u8 x s8 ROWS x 16 tiles (see :func:`_u8s8_tile_intrinsic`); offsets and strides count
#: bytes, a and b int8 arrays. Compile them only where :data:`HAS_AVX2`.
gemm_u8s8_4x16_rows_unsigned = _u8s8_tile_intrinsic(4, True)
gemm_u8s8_4x16_rows_signed = _u8s8_tile_intrinsic(4, False)


# ---------------------------------------------------------------------------------------------
# The float32 tile: ROWS x 16 sums of products, accumulated in 8-lane vectors of floats.

_F32 = ir.FloatType()
_V8F32 = ir.VectorType(_F32, 8)
_ZEROS8F = ir.Constant(_V8F32, [0.0] * 8)


def _f32_tile_intrinsic(ROWS):
    """ROWS x COLS float32 products over ``depth`` terms:

        c[c_off + i * c_stride + j] = sum_p a[a_off + i * a_stride + p * a_step]
                                            * b[b_off + p * b_stride + j]

    for i < ROWS, j < 16 (offsets and strides in elements). Per p: ROWS scalars of a, each
    broadcast to 8 lanes, two 8-float loads of b's row, 2·ROWS multiply-adds into vectors that
    stay in registers for the whole loop; c is written once at the end (overwritten). The
    multiply-add is LLVM's ``fmuladd`` (one fused instruction where the target has FMA)."""

    @intrinsic
    def gemm_tile(
        typingctx, a, a_off, a_stride, a_step, b, b_off, b_stride, depth, c, c_off, c_stride
    ):
        for array in (a, b, c):
            if not isinstance(array, types.Array) or array.dtype != types.float32:
                return None
        sig = types.void(a, a_off, a_stride, a_step, b, b_off, b_stride, depth, c, c_off, c_stride)
        return sig, codegen

    def codegen(context, builder, signature, args):
        arg_types = signature.args

        def intp(index):
            return context.cast(builder, args[index], arg_types[index], types.intp)

        a_off, a_stride, a_step = intp(1), intp(2), intp(3)
        b_off, b_stride, depth = intp(5), intp(6), intp(7)
        c_off, c_stride = intp(9), intp(10)
        a_data = _data(context, builder, arg_types[0], args[0])
        b_data = _data(context, builder, arg_types[4], args[4])
        c_data = _data(context, builder, arg_types[8], args[8])
        multiply_add = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_V8F32, [_V8F32] * 3), "llvm.fmuladd.v8f32"
        )
        rows = [
            builder.gep(a_data, [builder.add(a_off, builder.mul(a_stride, ir.Constant(_I64, i)))])
            for i in range(ROWS)
        ]
        b_base = builder.gep(b_data, [b_off])

        def terms(p, sums):
            b_row = builder.gep(b_base, [builder.mul(p, b_stride)])
            halves = _two_vectors(builder, b_row, _V8F32, 4)
            a_index = builder.mul(p, a_step)
            new_sums = []
            for i in range(ROWS):
                scalar = builder.load(builder.gep(rows[i], [a_index]), align=4)
                splat = _broadcast(builder, scalar, _V8F32)
                for h in range(2):
                    new_sums.append(builder.call(multiply_add, [splat, halves[h], sums[2 * i + h]]))
            return new_sums

        finals = _accumulate(builder, depth, 2 * ROWS, _ZEROS8F, terms)
        _store_rows(builder, finals, c_data, c_off, c_stride)
        return context.get_dummy_value()

    return gemm_tile


#: The 4 x 16 float32 tile of :func:`_f32_tile_intrinsic`; a, b and c float32 arrays.
gemm_f32_4x16 = _f32_tile_intrinsic(4)
