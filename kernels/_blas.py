"""NumPy's own BLAS GEMM, callable from inside Numba kernels (serial and ``prange`` alike).

``gemm(a, b, c, trans_a, trans_b, beta)`` computes ``c = op(a) @ op(b) + beta * c`` for 2-D
float32 or float64 matrices whose rows are contiguous (unit inner stride; any row stride, so a
column range of a wider buffer is fine), ``op`` the transpose when its flag is set.

Why: a kernel that splits its work over Numba's threads (a convolution's chunks of images, the
row blocks of a large product) calls the GEMM once per piece from each thread, with BLAS's own
threads pinned to one. One pool of threads then runs everything, where calling NumPy's matmul
from Python between parallel kernels left the BLAS pool and Numba's pool competing for the cores.

How: NumPy ships a BLAS (OpenBLAS in the wheels; MKL or a system CBLAS elsewhere). This module
finds that library among those loaded into the process, looks up its CBLAS ``?gemm`` under the
names the common builds export (64-bit integers where the name says so), and registers the
address with LLVM under a fixed name that the Numba code declares as an external function; so
compiled kernels stay cacheable, and each process binds the address afresh at import.

The registered function always takes 64-bit sizes: an LP64 library (MKL, a system CBLAS) is
reached through a small adapter compiled at import, and where no CBLAS is found at all the name
is bound to plain Numba loops with the same contract (correct and slow; :data:`AVAILABLE` is then
False). Cached kernels therefore never depend on which library a process found.
:data:`LIBRARY` names what was bound.
"""

from __future__ import annotations

import ctypes
import glob
import os

import llvmlite.binding as llvm
import numpy as np
from numba import carray, cfunc, njit, types
from numba.extending import overload

from ._simd import gemm_f32_4x16

# CBLAS constants (cblas.h): the row-major layout and the transpose flags.
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112

# The symbols the common builds export for ?gemm, with their integer width: NumPy's wheels
# (64-bit integers), then the plain LP64 interface (MKL, conda's and Linux distributions' CBLAS).
_SYMBOLS = (
    ("scipy_cblas_{}gemm64_", 64),
    ("cblas_{}gemm64_", 64),
    ("scipy_cblas_{}gemm", 32),
    ("cblas_{}gemm", 32),
)


def _loaded_libraries() -> list[str]:
    """Shared libraries that may hold NumPy's BLAS, likeliest first: those bundled with NumPy (its
    wheels), then those already mapped into this process whose name mentions a BLAS (Linux; a
    conda or system NumPy links one), never a Python extension module (SciPy's ``cython_blas``
    would lead to SciPy's own BLAS)."""
    site = os.path.dirname(os.path.dirname(np.__file__))
    names = []
    for folder in ("numpy.libs", os.path.join("numpy", ".dylibs")):
        names += sorted(glob.glob(os.path.join(site, folder, "*blas*")))
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                name = os.path.basename(path).lower()
                if path.startswith("/") and ("blas" in name or "mkl_rt" in name):
                    if "cpython" not in name and "site-packages/scipy" not in path:
                        names.append(path)
    except OSError:
        pass
    return list(dict.fromkeys(names))


def _find_cblas() -> tuple[str, int, dict[str, int]] | None:
    """(description, integer width, {"s": address, "d": address}) of the first CBLAS ?gemm found
    in NumPy's BLAS, or None."""
    for path in _loaded_libraries():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for pattern, bits in _SYMBOLS:
            try:
                functions = {kind: getattr(library, pattern.format(kind)) for kind in "sd"}
            except AttributeError:
                continue
            addresses = {k: ctypes.cast(f, ctypes.c_void_p).value for k, f in functions.items()}
            return f"{os.path.basename(path)} ({pattern.format('s')})", bits, addresses
    return None


def _signature(real: types.Type, integer: types.Type) -> types.Signature:
    """CBLAS ?gemm's C signature with ``real`` scalars and ``integer`` sizes."""
    pointer = types.CPointer(real)
    enum = types.int32
    return types.void(
        enum, enum, enum, integer, integer, integer,  # layout, op(a), op(b), m, n, k
        real, pointer, integer, pointer, integer,  # alpha, a, lda, b, ldb
        real, pointer, integer,  # beta, c, ldc
    )  # fmt: skip


_REALS = {"s": types.float32, "d": types.float64}


def _loop_gemm(layout, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """CBLAS ?gemm (row-major only) by plain loops: the stand-in where no CBLAS was found."""
    rows_a = k if trans_a == TRANS else m
    rows_b = n if trans_b == TRANS else k
    left = carray(a, (max(rows_a, 1), max(lda, 1)))
    right = carray(b, (max(rows_b, 1), max(ldb, 1)))
    out = carray(c, (max(m, 1), max(ldc, 1)))
    for i in range(m):
        for j in range(n):
            out[i, j] = beta * out[i, j] if beta != 0 else 0
        for p in range(k):
            factor = alpha * (left[p, i] if trans_a == TRANS else left[i, p])
            for j in range(n):
                out[i, j] += factor * (right[j, p] if trans_b == TRANS else right[p, j])


def _narrowing(kind: str, symbol: str) -> int:
    """The address of a C function with 64-bit sizes that calls the LP64 ``symbol``."""
    real = _REALS[kind]
    narrow = types.ExternalFunction(symbol, _signature(real, types.int32))

    @cfunc(_signature(real, types.int64))
    def adapter(layout, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        narrow(layout, trans_a, trans_b, np.int32(m), np.int32(n), np.int32(k), alpha, a,
               np.int32(lda), b, np.int32(ldb), beta, c, np.int32(ldc))  # fmt: skip

    _KEEP.append(adapter)
    return adapter.address


_KEEP: list = []  # the compiled C functions whose addresses LLVM holds


def _register() -> str | None:
    """Register ``fastnet_cblas_sgemm`` and ``fastnet_cblas_dgemm`` (64-bit sizes) with LLVM, to
    NumPy's CBLAS or, where there is none, to the loops; return what was bound (None: loops)."""
    found = _find_cblas()
    for kind, real in _REALS.items():
        if found is None:
            function = cfunc(_signature(real, types.int64))(_loop_gemm)
            _KEEP.append(function)
            address = function.address
        elif found[1] == 64:
            address = found[2][kind]
        else:
            llvm.add_symbol(f"fastnet_cblas32_{kind}gemm", found[2][kind])
            address = _narrowing(kind, f"fastnet_cblas32_{kind}gemm")
        llvm.add_symbol(f"fastnet_cblas_{kind}gemm", address)
    return None if found is None else found[0]


LIBRARY = _register()
AVAILABLE = LIBRARY is not None


def _external(kind: str) -> types.ExternalFunction:
    """The registered ?gemm as Numba code calls it: pointers passed as addresses (uintp, the same
    register as a C pointer), sizes 64-bit whatever the library's width (the adapter narrows)."""
    real = _REALS[kind]
    pointer = types.uintp
    enum, integer = types.int32, types.int64
    return types.ExternalFunction(
        f"fastnet_cblas_{kind}gemm",
        types.void(
            enum,
            enum,
            enum,
            integer,
            integer,
            integer,
            real,
            pointer,
            integer,
            pointer,
            integer,
            real,
            pointer,
            integer,
        ),  # fmt: skip
    )


_sgemm = _external("s")
_dgemm = _external("d")


@njit(cache=True)
def gemm(a, b, c, trans_a, trans_b, beta):
    """c = op(a) @ op(b) + beta * c; a, b, c 2-D, one float dtype, each row contiguous.

    The caller guarantees the shapes agree (op(a) (m, k), op(b) (k, n), c (m, n)): this is the
    innermost call of a kernel, past its argument checks."""
    m, n = c.shape
    inner = a.shape[0] if trans_a else a.shape[1]
    if m == 0 or n == 0:
        return
    if inner == 0:  # the product is zero (BLAS would leave c untouched only for beta = 1)
        if beta == 0:
            c[:] = 0
        else:
            c *= beta
        return
    size = a.itemsize
    # BLAS wants a leading dimension of at least the row's length, even for a single row.
    lda = max(a.strides[0] // size, a.shape[1])
    ldb = max(b.strides[0] // size, b.shape[1])
    ldc = max(c.strides[0] // size, c.shape[1])
    flag_a = TRANS if trans_a else NO_TRANS
    flag_b = TRANS if trans_b else NO_TRANS
    if size == 4:
        _sgemm(ROW_MAJOR, flag_a, flag_b, m, n, inner, np.float32(1), a.ctypes.data, lda,
               b.ctypes.data, ldb, np.float32(beta), c.ctypes.data, ldc)  # fmt: skip
    else:
        _dgemm(ROW_MAJOR, flag_a, flag_b, m, n, inner, 1.0, a.ctypes.data, lda,
               b.ctypes.data, ldb, float(beta), c.ctypes.data, ldc)  # fmt: skip


# Tiles of c that gemm_in_cache computes in registers: rows of op(a), columns of b.
TILE_ROWS, TILE_COLUMNS = 4, 16


def gemm_in_cache(a, b, c, trans_a):
    """c = op(a) @ b, overwritten; a, b, c 2-D, one float dtype, each row contiguous, the shapes
    agreeing (as :func:`gemm`'s). For products whose operands already sit in cache, as each of
    a Winograd chunk's 16 products does: float32 goes through 4 x 16 tiles of c kept in
    registers (``_simd.gemm_f32_4x16``), reading a and b where they lie, where BLAS first copies
    both into packed panels, which at 16-64 rows and columns of a few hundred costs a third of
    the product (the results log, issue 20's sixth round). What the tiles leave (rows past a
    multiple of 4, columns past a multiple of 16) and float64 go to :func:`gemm`. Callable from
    jitted code only."""
    raise NotImplementedError("gemm_in_cache is called from Numba-compiled kernels")


@overload(gemm_in_cache, jit_options={"cache": True})
def _gemm_in_cache(a, b, c, trans_a):
    if a.dtype != types.float32:
        return lambda a, b, c, trans_a: gemm(a, b, c, trans_a, False, 0.0)

    def tiled(a, b, c, trans_a):
        rows, columns = c.shape
        depth = b.shape[0]
        # op(a)[i, p] lies at i * a_stride + p * a_step
        a_stride, a_step = (1, a.strides[0] // 4) if trans_a else (a.strides[0] // 4, 1)
        b_stride, c_stride = b.strides[0] // 4, c.strides[0] // 4
        tiled_rows = rows - rows % TILE_ROWS
        tiled_columns = columns - columns % TILE_COLUMNS
        for j in range(0, tiled_columns, TILE_COLUMNS):  # b's column panel stays in L1
            for i in range(0, tiled_rows, TILE_ROWS):
                gemm_f32_4x16(
                    a, i * a_stride, a_stride, a_step, b, j, b_stride, depth, c,
                    i * c_stride + j, c_stride,
                )  # fmt: skip
        if tiled_rows < rows:
            rest = a[:, tiled_rows:] if trans_a else a[tiled_rows:]
            gemm(rest, b, c[tiled_rows:], trans_a, False, 0.0)
        if tiled_columns < columns and tiled_rows:
            head = a[:, :tiled_rows] if trans_a else a[:tiled_rows]
            gemm(head, b[:, tiled_columns:], c[:tiled_rows, tiled_columns:], trans_a, False, 0.0)

    return tiled


def describe() -> str:
    """Which GEMM the kernels call: the library and symbol, or the fallback loop."""
    return LIBRARY or "no CBLAS found: a plain Numba loop"
