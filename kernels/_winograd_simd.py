"""Winograd F(2x2, 3x3) tile transforms on LANES neighbouring tiles of one tile row at once, as
Numba intrinsics in LLVM IR (the math and the buffers are kernels/winograd.py's).

Why IR: a tile's transform touches the 16 tile matrices at once, one value each, and its 4x4
patch overlaps its neighbours' by two columns. Written as a Numba loop over tiles, it stays
scalar: LLVM gives up on 16 output streams that might alias the input, and on the stride-2
patch reads. Across LANES tiles j .. j + LANES - 1 of one tile row, everything is a vector:
patch column s of those tiles is every other value of a padded row from column 2j + s, so two
contiguous loads of 2·LANES values and their even/odd lanes give the 4 columns; and position ξ
of those tiles is LANES adjacent values of tile matrix ξ (their tile indices are adjacent), one
contiguous store. The adds are the scalar helpers' adds, in the same order, so every result is
bit for bit the scalar kernel's. The IR is generic (vectors and shuffles, no x86 intrinsics):
LLVM lowers it to AVX2, SSE or NEON, whatever the host has.

Each intrinsic takes every array with an element offset (from its data pointer) and an element
stride; rows of a plane and of a tile matrix are contiguous. Tile l (0 <= l < LANES) is the
l-th of the group, its patch columns 2l .. 2l + 3 of the plane rows, its output columns 2l, 2l+1.

One intrinsic a width L in LANES, named by it (Numba cannot pick from a dict):

* ``input_tiles_L(padded, offset, row_stride, tiles, t_offset, t_stride)``: tile l's
  V[ξ] = (Bᵀ d B)[ξ] into tiles[t_offset + ξ·t_stride + l]; d is rows offset + r·row_stride
  (r < 4) of ``padded``, 2·LANES + 2 values read from each.
* ``output_tiles_L(tiles, t_offset, t_stride, bias, y, offset, row_stride)``: Aᵀ M A + bias
  of tile l's M (read as the input side writes V) into two rows of y, 2·LANES values each.
* ``output_grad_tiles_L(dy, offset, row_stride, tiles, t_offset, t_stride)``: dM = A dY Aᵀ
  of tile l's 2x2 gradient, read from two rows of dy as the output side writes them.
* ``input_grad_tiles_L(tiles, t_offset, t_stride, padded, offset, row_stride)``: B dV Bᵀ of
  tile l added onto its patch in four rows of ``padded``, in the scalar kernel's order (tile
  l - 1's patch columns 2, 3 before tile l's columns 0, 1, which they overlap); reads and writes
  4·LANES values a row (adding zero past the group's patches), so ``padded`` needs 2·LANES - 2
  columns of room past the last patch.

The first three only write their own tiles, the same values whichever group computes them, so a
caller may overlap groups; the input gradient adds, so its groups must not overlap.

tests/kernels/test_winograd_vector_groups.py replays every transform tile by tile through the
scalar helpers and compares bit for bit. Numba's on-disk cache of the kernels that call these
intrinsics is keyed on kernels/winograd.py alone: after editing this file, delete the cached
kernels (``kernels/__pycache__/winograd.*.nb*``) or set ``NUMBA_CACHE_DIR`` to a fresh folder.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._simd import _data

LANES = (8, 4)  # the group widths the kernels use, widest first (8 float32: one AVX2 register)

_I32 = ir.IntType(32)
_FLOATS = (types.float32, types.float64)


def _indices(values) -> ir.Constant:
    values = list(values)
    return ir.Constant(ir.VectorType(_I32, len(values)), values)


def _same_float_arrays(*arrays) -> bool:
    return (
        all(isinstance(array, types.Array) and array.dtype in _FLOATS for array in arrays)
        and len({array.dtype for array in arrays}) == 1
    )


class _Vectors:
    """Vectors of ``lanes`` floats of one dtype: loads, stores, lane shuffles and arithmetic."""

    def __init__(self, context, builder, dtype, lanes):
        self.builder = builder
        self.scalar = context.get_value_type(dtype)
        self.align = context.get_abi_sizeof(self.scalar)
        self.lanes = lanes
        self.even = _indices(range(0, 2 * lanes, 2))
        self.odd = _indices(range(1, 2 * lanes, 2))
        self.interleaved = _indices(index + half for index in range(lanes) for half in (0, lanes))

    def _pointer(self, data, offset, width):
        vector = ir.VectorType(self.scalar, width)
        return self.builder.bitcast(self.builder.gep(data, [offset]), vector.as_pointer())

    def load(self, data, offset, width):
        return self.builder.load(self._pointer(data, offset, width), align=self.align)

    def store(self, value, data, offset):
        pointer = self._pointer(data, offset, value.type.count)
        self.builder.store(value, pointer, align=self.align)

    def at(self, offset, step, times):
        """offset + step·times, as an intp."""
        return self.builder.add(offset, self.builder.mul(step, ir.Constant(offset.type, times)))

    def halves(self, wide):
        """(even lanes, odd lanes) of a 2·lanes vector."""
        builder = self.builder
        return (
            builder.shuffle_vector(wide, wide, self.even),
            builder.shuffle_vector(wide, wide, self.odd),
        )

    def interleave(self, even, odd):
        """even[0], odd[0], even[1], odd[1], ...: the 2·lanes vector :meth:`halves` splits."""
        return self.builder.shuffle_vector(even, odd, self.interleaved)

    def splat(self, value):
        vector = ir.VectorType(self.scalar, self.lanes)
        one = self.builder.insert_element(
            ir.Constant(vector, ir.Undefined), value, ir.Constant(_I32, 0)
        )
        return self.builder.shuffle_vector(one, one, _indices([0] * self.lanes))

    def add(self, a, b):
        return self.builder.fadd(a, b)

    def sub(self, a, b):
        return self.builder.fsub(a, b)

    def neg(self, a):
        return self.builder.fneg(a)


# The 1-D transforms, kernels/winograd.py's _b_t, _b, _a_t and _a: the same adds in the same order.


def _b_t(v, d0, d1, d2, d3):
    return v.sub(d0, d2), v.add(d1, d2), v.sub(d2, d1), v.sub(d1, d3)


def _b(v, v0, v1, v2, v3):
    return v0, v.add(v.sub(v1, v2), v3), v.sub(v.add(v1, v2), v0), v.neg(v3)


def _a_t(v, m0, m1, m2, m3):
    return v.add(v.add(m0, m1), m2), v.sub(v.sub(m1, m2), m3)


def _a(v, g0, g1):
    return g0, v.add(g0, g1), v.sub(g0, g1), v.neg(g1)


def _operands(context, builder, signature, args, arrays, integers):
    """The data pointers of args[arrays] and args[integers] as intp."""
    data = [_data(context, builder, signature.args[i], args[i]) for i in arrays]
    numbers = [context.cast(builder, args[i], signature.args[i], types.intp) for i in integers]
    return data, numbers


def _generate(lanes, dtype, codegen):
    def generate(context, builder, signature, args):
        codegen(_Vectors(context, builder, dtype, lanes), context, builder, signature, args)
        return context.get_dummy_value()

    return generate


def _between_arrays(lanes, codegen):
    """An intrinsic (array, offset, stride, array, offset, stride) -> void over two float arrays
    of one dtype, generating ``codegen``."""

    @intrinsic
    def tile_intrinsic(typingctx, source, offset, stride, target, t_offset, t_stride):
        if not _same_float_arrays(source, target):
            return None
        signature = types.void(source, offset, stride, target, t_offset, t_stride)
        return signature, _generate(lanes, source.dtype, codegen)

    return tile_intrinsic


def _output_intrinsic(lanes):
    """:func:`_between_arrays` with the bias (a scalar) between the two arrays."""

    @intrinsic
    def tile_intrinsic(typingctx, tiles, t_offset, t_stride, bias, y, offset, stride):
        if not _same_float_arrays(tiles, y) or not isinstance(bias, (types.Float, types.Integer)):
            return None
        signature = types.void(tiles, t_offset, t_stride, bias, y, offset, stride)
        return signature, _generate(lanes, tiles.dtype, _output_codegen)

    return tile_intrinsic


def _input_codegen(v, context, builder, signature, args):
    (padded, tiles), (offset, row_stride, t_offset, t_stride) = _operands(
        context, builder, signature, args, (0, 3), (1, 2, 4, 5)
    )
    columns = []  # columns[r] = patch row r's columns 0..3, each across the tiles
    for r in range(4):
        start = v.at(offset, row_stride, r)
        low = v.load(padded, start, 2 * v.lanes)  # columns 2l, 2l + 1
        high = v.load(padded, builder.add(start, ir.Constant(start.type, 2)), 2 * v.lanes)
        columns.append((*v.halves(low), *v.halves(high)))
    transformed = [_b_t(v, *(columns[r][s] for r in range(4))) for s in range(4)]  # Bᵀ d
    for a in range(4):
        row = _b_t(v, *(transformed[s][a] for s in range(4)))  # (Bᵀ d B)[a, :]
        for b in range(4):
            v.store(row[b], tiles, v.at(t_offset, t_stride, 4 * a + b))


def _output_codegen(v, context, builder, signature, args):
    (tiles, y), (t_offset, t_stride, offset, row_stride) = _operands(
        context, builder, signature, args, (0, 4), (1, 2, 5, 6)
    )
    dtype = signature.args[0].dtype
    bias = v.splat(context.cast(builder, args[3], signature.args[3], dtype))
    m = [v.load(tiles, v.at(t_offset, t_stride, position), v.lanes) for position in range(16)]
    left = _a_t(v, *(v.add(v.add(m[4 * a], m[4 * a + 1]), m[4 * a + 2]) for a in range(4)))
    right = _a_t(v, *(v.sub(v.sub(m[4 * a + 1], m[4 * a + 2]), m[4 * a + 3]) for a in range(4)))
    for row in range(2):
        values = v.interleave(v.add(left[row], bias), v.add(right[row], bias))
        v.store(values, y, v.at(offset, row_stride, row))


def _output_grad_codegen(v, context, builder, signature, args):
    (dy, tiles), (offset, row_stride, t_offset, t_stride) = _operands(
        context, builder, signature, args, (0, 3), (1, 2, 4, 5)
    )
    g00, g01 = v.halves(v.load(dy, offset, 2 * v.lanes))
    g10, g11 = v.halves(v.load(dy, v.at(offset, row_stride, 1), 2 * v.lanes))
    col0, col1 = _a(v, g00, g10), _a(v, g01, g11)
    for a in range(4):
        for b, value in enumerate(_a(v, col0[a], col1[a])):
            v.store(value, tiles, v.at(t_offset, t_stride, 4 * a + b))


def _input_grad_codegen(v, context, builder, signature, args):
    (tiles, padded), (t_offset, t_stride, offset, row_stride) = _operands(
        context, builder, signature, args, (0, 3), (1, 2, 4, 5)
    )
    dv = [v.load(tiles, v.at(t_offset, t_stride, position), v.lanes) for position in range(16)]
    columns = [_b(v, *(dv[4 * a + b] for a in range(4))) for b in range(4)]  # columns[b][r]
    width = 2 * v.lanes
    zeros = ir.Constant(ir.VectorType(v.scalar, width), None)
    # A patch row's columns 2, 3 reach 2 values past the group: they shift into lanes 2 .. of the
    # group's span and, for the last tile, lanes 0, 1 of the next span. Both spans are read and
    # written whole, so the next group's read of its span is forwarded from this group's store
    # (a read straddling two stores would stall on it).
    into_span = _indices([width + k - 2 if k >= 2 else k for k in range(width)])  # (zeros, B)
    past_span = _indices([width - 2, width - 1] + [width + k for k in range(2, width)])  # (B, 0)
    for r in range(4):
        patch = _b(v, *(columns[b][r] for b in range(4)))  # patch row r, columns 0..3
        first = v.interleave(patch[0], patch[1])
        second = v.interleave(patch[2], patch[3])
        span = v.at(offset, row_stride, r)
        following = builder.add(span, ir.Constant(span.type, width))
        here = v.load(padded, span, width)
        after = v.load(padded, following, width)
        # tile l - 1's columns 2, 3 before tile l's columns 0, 1: the scalar kernel's order
        here = v.add(v.add(here, builder.shuffle_vector(zeros, second, into_span)), first)
        after = v.add(after, builder.shuffle_vector(second, zeros, past_span))
        v.store(here, padded, span)
        v.store(after, padded, following)


# One intrinsic a group width (LANES); the kernels pick by name, Numba cannot index a dict.
input_tiles_8, input_tiles_4 = (_between_arrays(lanes, _input_codegen) for lanes in LANES)
output_tiles_8, output_tiles_4 = (_output_intrinsic(lanes) for lanes in LANES)
output_grad_tiles_8, output_grad_tiles_4 = (
    _between_arrays(lanes, _output_grad_codegen) for lanes in LANES
)
input_grad_tiles_8, input_grad_tiles_4 = (
    _between_arrays(lanes, _input_grad_codegen) for lanes in LANES
)
