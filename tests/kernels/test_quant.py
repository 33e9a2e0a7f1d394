"""The int8 family against its int64/float64 references: both variants, odd sizes, full-range
random int8 inputs, the three epilogues, and every refused argument.

The CUDA variants run in the simulator on tiny shapes (a few blocks)."""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels import quant

CPU = {
    "quantize": quant.quantize_cpu,
    "dequantize": quant.dequantize_cpu,
    "linear_int8": quant.linear_int8_cpu,
    "conv2d_int8": quant.conv2d_int8_cpu,
}
CUDA = {
    "quantize": quant.quantize_cuda,
    "dequantize": quant.dequantize_cuda,
    "linear_int8": quant.linear_int8_cuda,
    "conv2d_int8": quant.conv2d_int8_cuda,
}
VARIANTS = pytest.mark.parametrize("ops", [CPU, CUDA], ids=["cpu", "cuda"])
EPILOGUE_DTYPES = [np.int32, np.float32, np.int8]
HALF_TIE = 1e-5  # an int8 output may differ where y / out_scale lies this near a half-integer


def int8s(rng, shape):
    """Uniform over all 256 int8 values, no zeros (a kernel that skips work cannot pass)."""
    values = rng.integers(-128, 127, shape, dtype=np.int16)
    values[values >= 0] += 1
    return values.astype(np.int8)


def epilogue_of(rng, channels, k):
    """multiplier and bias that put y in a range where the int8 output is neither all zero nor
    all saturated (out_scale 0.05: |y / out_scale| up to a few hundred)."""
    multiplier = (rng.uniform(0.5, 2.0, channels) * 2.0 / (128 * 128 * np.sqrt(k))).astype(
        np.float32
    )
    bias = rng.uniform(-2.0, 2.0, channels).astype(np.float32)
    return multiplier, bias


def check_epilogue(out, expected, y, out_scale):
    """out against the reference: int32 exactly, float32 to a few ulps, int8 exactly but where
    y / out_scale lies within HALF_TIE of a half-integer."""
    if out.dtype == np.int32:
        np.testing.assert_array_equal(out.astype(np.int64), expected)
    elif out.dtype == np.float32:
        error = np.abs(out.astype(np.float64) - expected)
        # a few float32 roundings of acc * multiplier and of + bias (which may cancel)
        assert (error <= 4e-7 * (np.abs(expected) + np.abs(y - expected) + 1e-30)).all() or (
            error.max() <= 4e-7 * np.abs(expected).max()
        )
    else:
        scaled = y / out_scale
        near_tie = np.abs(np.abs(scaled - np.floor(scaled)) - 0.5) < HALF_TIE
        near_tie &= np.abs(scaled) < 128  # saturated values are exact anyway
        differ = out.astype(np.int64) != expected
        assert not (differ & ~near_tie).any(), np.argwhere(differ & ~near_tie)[:5]
        assert (np.abs(out.astype(np.int64) - expected)[differ] <= 1).all()


# ---------------------------------------------------------------------------------------------
# quantize / dequantize


@VARIANTS
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5, 11), (300,)], ids=str)
def test_quantize_matches_reference(rng, ops, shape):
    scale = 0.0137
    x = (rng.standard_normal(shape) * 1.2).astype(np.float32)
    out = np.full(shape, -1, np.int8)
    assert ops["quantize"](x, scale, out) is out
    expected = quant.reference_quantize(x, scale)
    scaled = x.astype(np.float64) / scale
    near_tie = np.abs(np.abs(scaled - np.floor(scaled)) - 0.5) < HALF_TIE
    differ = out.astype(np.int64) != expected
    assert not (differ & ~near_tie).any()
    if x.size >= 100:  # saturation exercised
        assert (expected == 127).any() and (expected == -128).any()


@VARIANTS
def test_quantize_ties_to_even_and_saturates(ops):
    scale = 0.5  # a power of two: x / scale is exact, so these are true ties
    x = np.array(
        [1.25, -1.25, 1.75, 0.25, -0.25, 0.75, 63.25, 1e30, -1e30, 63.75, -64.25, -64.0, 0.0],
        np.float32,
    )
    out = np.full(x.shape, 99, np.int8)
    ops["quantize"](x, scale, out)
    expected = [2, -2, 4, 0, 0, 2, 126, 127, -128, 127, -128, -128, 0]
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out, quant.reference_quantize(x, scale))


@VARIANTS
@pytest.mark.parametrize("shape", [(1,), (4, 9), (2, 3, 37)], ids=str)
def test_dequantize_is_exact(rng, ops, shape):
    q = int8s(rng, shape)
    out = np.full(shape, np.nan, np.float32)
    assert ops["dequantize"](q, 0.0371, out) is out
    # float32 products are correctly rounded: the float64 reference rounded once is exact
    expected = quant.reference_dequantize(q, 0.0371).astype(np.float32)
    np.testing.assert_array_equal(out, expected)


# ---------------------------------------------------------------------------------------------
# linear_int8

LINEAR_CPU_SHAPES = [(1, 1, 1), (5, 7, 3), (9, 33, 11), (13, 300, 6), (6, 1, 9), (64, 129, 17)]
LINEAR_CUDA_SHAPES = [(1, 1, 1), (5, 7, 3), (9, 33, 11), (3, 70, 5)]


def run_linear(rng, ops, shape, dtype, relu):
    m, k, n = shape
    a, w = int8s(rng, (m, k)), int8s(rng, (n, k))
    multiplier, bias = epilogue_of(rng, n, k)
    out = np.full((m, n), -1, dtype) if dtype != np.float32 else np.full((m, n), np.nan, dtype)
    assert ops["linear_int8"](a, w, multiplier, bias, relu, 0.05, out) is out
    expected = quant.reference_linear_int8(a, w, multiplier, bias, relu, 0.05, out)
    y = quant.reference_linear_int8(a, w, multiplier, bias, relu, 0.05, out.astype(np.float32))
    check_epilogue(out, expected, y, 0.05)


@pytest.mark.parametrize("shape", LINEAR_CPU_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", EPILOGUE_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("driver", ["serial", "parallel"])
def test_linear_cpu_matches_reference(rng, force_driver, shape, dtype, relu, driver):
    force_driver(driver)
    run_linear(rng, CPU, shape, dtype, relu)


@pytest.mark.parametrize("shape", LINEAR_CUDA_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", EPILOGUE_DTYPES, ids=lambda d: np.dtype(d).name)
def test_linear_cuda_matches_reference(rng, shape, dtype):
    run_linear(rng, CUDA, shape, dtype, True)


@VARIANTS
def test_linear_accumulator_at_the_int8_limits_does_not_overflow(ops):
    """Every product at +-128*128: |acc| = 16384 * K, 2**26 at K = 4096 (the simulator: K = 160,
    ten K tiles)."""
    k = 4096 if ops is CPU else 160
    a = np.full((4, k), -128, np.int8)
    a[1] = 127
    a[2, ::2] = 127
    w = np.full((3, k), -128, np.int8)
    w[2] = 127
    multiplier = np.ones(3, np.float32)
    out = np.full((4, 3), -1, np.int32)
    ops["linear_int8"](a, w, multiplier, np.zeros(3, np.float32), False, 1.0, out)
    expected = quant.reference_linear_int8(a, w, multiplier, None, False, 1.0, out)
    assert expected[0, 0] == 128 * 128 * k
    np.testing.assert_array_equal(out.astype(np.int64), expected)


# ---------------------------------------------------------------------------------------------
# conv2d_int8

# (batch, channels, height, width, out channels, kernel, stride, padding)
CONV_CPU_GEOMETRIES = [
    (2, 1, 6, 6, 4, 3, 1, 1),
    (3, 3, 7, 5, 5, 3, 1, 1),
    (2, 2, 9, 8, 3, 3, 2, 0),
    (1, 4, 5, 5, 7, 1, 1, 0),
    (2, 5, 6, 7, 6, 2, 3, 2),
    (5, 32, 8, 8, 9, 3, 1, 1),
]
CONV_CUDA_GEOMETRIES = [(2, 2, 5, 4, 3, 3, 1, 1), (1, 3, 6, 5, 2, 2, 2, 1)]


def run_conv(rng, ops, geometry, dtype, relu, pool=1):
    batch, channels, height, width, out_channels, kernel, stride, padding = geometry
    x = int8s(rng, (batch, channels, height, width))
    w = int8s(rng, (out_channels, channels, kernel, kernel))
    multiplier, bias = epilogue_of(rng, out_channels, channels * kernel * kernel)
    out_h = (height + 2 * padding - kernel) // stride + 1
    out_w = (width + 2 * padding - kernel) // stride + 1
    shape = (batch, out_channels, out_h // pool, out_w // pool)
    out = np.full(shape, np.nan if dtype == np.float32 else -1, dtype)
    args = (x, w, multiplier, bias, relu, 0.05, stride, padding, pool)
    assert ops["conv2d_int8"](*args, out) is out
    expected = quant.reference_conv2d_int8(*args, out)
    y = quant.reference_conv2d_int8(*args, out.astype(np.float32))
    check_epilogue(out, expected, y, 0.05)
    return out


@pytest.mark.parametrize("geometry", CONV_CPU_GEOMETRIES, ids=str)
@pytest.mark.parametrize("dtype", EPILOGUE_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("driver", ["serial", "parallel"])
def test_conv_cpu_matches_reference(rng, force_driver, geometry, dtype, driver):
    force_driver(driver)
    run_conv(rng, CPU, geometry, dtype, relu=dtype != np.int32)


def test_conv_cpu_in_several_chunks(rng, monkeypatch):
    """A workspace of one image: every image is its own chunk."""
    monkeypatch.setattr(quant, "images_per_chunk", lambda size: 1)
    run_conv(rng, CPU, (3, 2, 6, 6, 3, 3, 1, 1), np.int8, True)


@pytest.mark.parametrize("geometry", CONV_CUDA_GEOMETRIES, ids=str)
@pytest.mark.parametrize("dtype", EPILOGUE_DTYPES, ids=lambda d: np.dtype(d).name)
def test_conv_cuda_matches_reference(rng, geometry, dtype):
    run_conv(rng, CUDA, geometry, dtype, relu=True)


# pooled: (geometry, pool), Ho or Wo not a multiple of pool in most
CONV_POOL_CPU_CASES = [
    ((2, 1, 6, 6, 4, 3, 1, 1), 2),
    ((3, 3, 7, 5, 5, 3, 1, 1), 2),
    ((2, 2, 9, 8, 3, 3, 1, 0), 3),
    ((2, 5, 11, 10, 6, 3, 1, 1), 3),
    ((3, 32, 14, 14, 9, 3, 1, 1), 2),
    ((2, 3, 13, 11, 19, 3, 1, 1), 2),
    ((1, 2, 9, 9, 3, 3, 2, 1), 2),
]
CONV_POOL_CUDA_CASES = [((2, 2, 5, 5, 3, 3, 1, 1), 2), ((1, 3, 7, 8, 2, 3, 1, 0), 3)]


@pytest.mark.parametrize("case", CONV_POOL_CPU_CASES, ids=str)
@pytest.mark.parametrize("dtype", EPILOGUE_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("driver", ["serial", "parallel"])
def test_conv_cpu_pooled_matches_reference(rng, force_driver, case, dtype, relu, driver):
    force_driver(driver)
    geometry, pool = case
    run_conv(rng, CPU, geometry, dtype, relu, pool)


@pytest.mark.parametrize("case", CONV_POOL_CUDA_CASES, ids=str)
@pytest.mark.parametrize("dtype", EPILOGUE_DTYPES, ids=lambda d: np.dtype(d).name)
def test_conv_cuda_pooled_matches_reference(rng, case, dtype):
    geometry, pool = case
    run_conv(rng, CUDA, geometry, dtype, True, pool)


def test_conv_cpu_pooled_in_several_chunks(rng, monkeypatch):
    monkeypatch.setattr(quant, "images_per_chunk", lambda size: 1)
    run_conv(rng, CPU, (3, 2, 7, 7, 3, 3, 1, 1), np.int8, True, 2)


@VARIANTS
def test_conv_pool_is_the_max_of_the_unpooled_output(rng, ops):
    """The pooled kernel against the unpooled kernel max-pooled (PyTorch's MaxPool2d floor)."""
    geometry = (2, 3, 7, 5, 4, 3, 1, 1) if ops is CPU else (1, 2, 5, 5, 3, 3, 1, 1)
    # the simulator: one epilogue (the others run in test_conv_cuda_pooled_matches_reference)
    for dtype in EPILOGUE_DTYPES if ops is CPU else (np.int8,):
        rng_state = rng.bit_generator.state
        full = run_conv(rng, ops, geometry, dtype, True)
        rng.bit_generator.state = rng_state
        pooled = run_conv(rng, ops, geometry, dtype, True, 2)
        h, w = pooled.shape[2:]
        windows = full[:, :, : 2 * h, : 2 * w].reshape(*full.shape[:2], h, 2, w, 2)
        np.testing.assert_array_equal(pooled, windows.max(axis=(3, 5)))


# ---------------------------------------------------------------------------------------------
# refused arguments: a clear error naming the op and the argument, nothing written


def linear_args(rng):
    return {
        "a": int8s(rng, (4, 6)),
        "w": int8s(rng, (3, 6)),
        "multiplier": np.ones(3, np.float32),
        "bias": np.ones(3, np.float32),
        "relu": False,
        "out_scale": 0.1,
        "out": np.full((4, 3), -1, np.int32),
    }


LINEAR_REFUSALS = [
    ("a", lambda a: a.astype(np.int16), TypeError, "a must be int8"),
    ("a", lambda a: a[:, ::2], ValueError, "a must be C-contiguous"),
    ("a", lambda a: a.reshape(-1), ValueError, "a must be 2-D"),
    ("w", lambda w: w[:, :5].copy(), ValueError, "disagree on K"),
    ("w", lambda w: w.astype(np.float32), TypeError, "w must be int8"),
    ("multiplier", lambda m: m[:2].copy(), ValueError, r"multiplier must have shape \(3,\)"),
    ("multiplier", lambda m: m.astype(np.float64), TypeError, "multiplier must be float32"),
    ("bias", lambda b: b.reshape(1, 3), ValueError, "bias must be 1-D"),
    ("relu", lambda r: 1, TypeError, "relu must be a bool"),
    ("out_scale", lambda s: 0.0, ValueError, "out_scale must be finite and > 0"),
    ("out_scale", lambda s: float("inf"), ValueError, "out_scale must be finite and > 0"),
    ("out_scale", lambda s: float("nan"), ValueError, "out_scale must be finite and > 0"),
    ("out_scale", lambda s: "0.1", TypeError, "out_scale must be a Python float"),
    ("out", lambda o: np.empty((4, 3), np.float64), TypeError, "out must be int32, float32"),
    ("out", lambda o: np.empty((3, 4), np.int32), ValueError, r"out must have shape \(4, 3\)"),
    ("out", lambda o: np.empty((3, 4), np.int32).T, ValueError, "out must be C-contiguous"),
]


@VARIANTS
@pytest.mark.parametrize(
    "name, change, error, message", LINEAR_REFUSALS, ids=[r[3] for r in LINEAR_REFUSALS]
)
def test_linear_refuses(rng, ops, name, change, error, message):
    args = linear_args(rng)
    out = args["out"]
    args[name] = change(args[name])
    with pytest.raises(error, match=f"linear_int8: .*{message}"):
        ops["linear_int8"](**args)
    assert (out == -1).all()


def conv_args(rng):
    return {
        "x": int8s(rng, (2, 3, 5, 5)),
        "w": int8s(rng, (4, 3, 3, 3)),
        "multiplier": np.ones(4, np.float32),
        "bias": np.ones(4, np.float32),
        "relu": True,
        "out_scale": 0.1,
        "stride": 1,
        "padding": 1,
        "pool": 1,
        "out": np.full((2, 4, 5, 5), -1, np.int8),
    }


CONV_REFUSALS = [
    ("x", lambda x: x[:, :2].copy(), ValueError, "disagree on C"),
    ("x", lambda x: x.astype(np.uint8), TypeError, "x must be int8"),
    ("x", lambda x: x[..., ::2], ValueError, "x must be C-contiguous"),
    ("w", lambda w: w[0], ValueError, "w must be 4-D"),
    ("w", lambda w: np.zeros((4, 3, 9, 9), np.int8), ValueError, "does not fit"),
    ("multiplier", lambda m: m[:3].copy(), ValueError, r"multiplier must have shape \(4,\)"),
    ("stride", lambda s: 0, ValueError, "stride must be at least 1"),
    ("stride", lambda s: 1.0, TypeError, "stride must be an int"),
    ("padding", lambda p: -1, ValueError, "padding must be at least 0"),
    ("out_scale", lambda s: -0.1, ValueError, "out_scale must be finite and > 0"),
    ("out", lambda o: np.empty((2, 4, 3, 3), np.int8), ValueError, "out must have shape"),
    ("pool", lambda p: 0, ValueError, "pool must be at least 1"),
    ("pool", lambda p: 2.0, TypeError, "pool must be an int"),
    ("pool", lambda p: True, TypeError, "pool must be an int"),
    ("pool", lambda p: 6, ValueError, "pool 6 does not fit the convolution's 5x5 output"),
    ("pool", lambda p: 2, ValueError, r"out must have shape \(2, 4, 2, 2\)"),
    ("out", lambda o: np.empty((2, 4, 5, 5), np.uint8), TypeError, "out must be int32"),
]


@VARIANTS
@pytest.mark.parametrize(
    "name, change, error, message", CONV_REFUSALS, ids=[r[3] for r in CONV_REFUSALS]
)
def test_conv_refuses(rng, ops, name, change, error, message):
    args = conv_args(rng)
    out = args["out"]
    args[name] = change(args[name])
    with pytest.raises(error, match=f"conv2d_int8: .*{message}"):
        ops["conv2d_int8"](**args)
    assert (out == -1).all()


@VARIANTS
@pytest.mark.parametrize("bad", [0.0, -1e-3, np.nan])
def test_conv_pooled_refuses_a_multiplier_not_positive(rng, ops, bad):
    args = conv_args(rng)
    args["pool"] = 2
    out = args["out"] = np.full((2, 4, 2, 2), -1, np.int8)
    args["multiplier"][2] = bad
    with pytest.raises(ValueError, match="conv2d_int8: multiplier must be > 0 with pool > 1"):
        ops["conv2d_int8"](**args)
    assert (out == -1).all()
    if np.isfinite(bad) and ops is CPU:  # no pool: any multiplier (the simulator: too slow)
        args["pool"], args["out"] = 1, np.full((2, 4, 5, 5), -1, np.int8)
        ops["conv2d_int8"](**args)


@VARIANTS
def test_quantize_and_dequantize_refuse(rng, ops):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    q = np.full((3, 4), -1, np.int8)
    with pytest.raises(TypeError, match="quantize: x must be float32"):
        ops["quantize"](x.astype(np.float64), 0.1, q)
    with pytest.raises(TypeError, match="quantize: out must be int8"):
        ops["quantize"](x, 0.1, np.empty((3, 4), np.int32))
    with pytest.raises(ValueError, match="quantize: out has shape"):
        ops["quantize"](x, 0.1, np.empty((4, 3), np.int8))
    with pytest.raises(ValueError, match="quantize: x must be C-contiguous"):
        ops["quantize"](x.T, 0.1, np.empty((4, 3), np.int8))
    for scale in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="quantize: scale must be finite and > 0"):
            ops["quantize"](x, scale, q)
    assert (q == -1).all()
    out = np.full((3, 4), np.nan, np.float32)
    with pytest.raises(TypeError, match="dequantize: q must be int8"):
        ops["dequantize"](x, 0.1, out)
    with pytest.raises(TypeError, match="dequantize: out must be float32"):
        ops["dequantize"](q, 0.1, np.empty((3, 4), np.float64))
    with pytest.raises(ValueError, match="dequantize: scale must be finite and > 0"):
        ops["dequantize"](q, 0.0, out)
    assert np.isnan(out).all()


# ---------------------------------------------------------------------------------------------
# the CPU GEMM's operand layouts (kernels/_simd.py's int16 pairs) and its tile tails


@pytest.mark.parametrize("n, k", [(1, 1), (16, 2), (19, 7), (33, 300)], ids=str)
def test_pack_pairs_layout(rng, n, k):
    w = int8s(rng, (n, k))
    k2 = (k + 1) // 2
    packed = quant._pack_pairs(w, k2)
    panels = -(-n // quant.TILE_N)
    expected = np.zeros((panels * quant.TILE_N, 2 * k2), np.int16)
    expected[:n, :k] = w
    # (panel, pair, column of the panel, half of the pair)
    expected = expected.reshape(panels, quant.TILE_N, k2, 2).transpose(0, 2, 1, 3)
    np.testing.assert_array_equal(packed, expected.reshape(-1))


@pytest.mark.parametrize(
    "geometry", [(3, 6, 5, 3, 1, 1), (2, 7, 9, 3, 2, 0), (1, 4, 4, 2, 3, 2), (5, 3, 3, 1, 1, 0)]
)
def test_im2col_pairs_layout(rng, geometry):
    """(channels, height, width, kernel, stride, padding): odd and even K, padding, strides."""
    channels, height, width, kernel, stride, padding = geometry
    x = int8s(rng, (2, channels, height, width))
    out_h = (height + 2 * padding - kernel) // stride + 1
    out_w = (width + 2 * padding - kernel) // stride + 1
    k = channels * kernel * kernel
    k2, pixels = (k + 1) // 2, out_h * out_w
    padded = -(-pixels // quant.TILE_N) * quant.TILE_N
    cols = np.full(padded * 2 * k2, 7, np.int16)  # every value written, the pads with 0
    quant._im2col_pairs(x, 1, cols, k, kernel, kernel, stride, padding, out_h, out_w, width)
    xp = np.pad(x[1], ((0, 0), (padding, padding), (padding, padding)))
    expected = np.zeros((2 * k2, padded), np.int16)
    for oh in range(out_h):
        for ow in range(out_w):
            window = xp[:, oh * stride : oh * stride + kernel, ow * stride : ow * stride + kernel]
            expected[:k, oh * out_w + ow] = window.reshape(-1)
    # (panel, pair, pixel of the panel, half of the pair)
    panels = padded // quant.TILE_N
    got = cols.reshape(panels, k2, quant.TILE_N, 2).transpose(1, 3, 0, 2).reshape(2 * k2, padded)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "shape", [(33, 2, 16), (37, 3, 31), (70, 288, 33), (4, 5, 64), (3, 1, 17)], ids=str
)
@pytest.mark.parametrize("dtype", EPILOGUE_DTYPES, ids=lambda d: np.dtype(d).name)
def test_linear_cpu_tile_tails(rng, force_driver, shape, dtype):
    """M past ROWS_PER_TASK and not a multiple of TILE_M, N around multiples of TILE_N."""
    force_driver("parallel")
    run_linear(rng, CPU, shape, dtype, True)


def test_conv_cpu_wide_output(rng):
    """More than one tile of pixels and of channels, with tails in both."""
    run_conv(rng, CPU, (2, 3, 13, 11, 19, 3, 1, 1), np.int8, True)
    run_conv(rng, CPU, (1, 2, 9, 10, 5, 2, 1, 0), np.int32, False)


# ---------------------------------------------------------------------------------------------
# the u8 x s8 path (AVX2: vpmaddubsw): activations in [0, 127], weights in [-127, 127]

U8S8 = pytest.mark.skipif(not quant.U8S8, reason="the u8 x s8 path needs AVX2")


def codes(rng, shape, low, high):
    """Uniform over [low, high] without 0 (a kernel that skips work cannot pass); at least one
    value at each end."""
    values = rng.integers(low, high, shape, endpoint=True, dtype=np.int16)
    values[values == 0] = high
    flat = values.reshape(-1)
    flat[0], flat[-1] = low if low else high, high
    return values.astype(np.int8)


@pytest.fixture
def paths(monkeypatch):
    """Counts the calls of the u8 x s8 and the int16-pair kernels."""
    calls = {"u8s8": 0, "int16": 0}
    for name, path in (
        ("_linear_kernel_u8_cpu", "u8s8"),
        ("_conv_kernel_u8_cpu", "u8s8"),
        ("_linear_kernel_cpu", "int16"),
        ("_conv_kernel_cpu", "int16"),
    ):
        kernel = getattr(quant, name)

        def counted(*args, kernel=kernel, path=path):
            calls[path] += 1
            return kernel(*args)

        monkeypatch.setattr(quant, name, counted)
    return calls


def linear_of(rng, a, w, dtype):
    m, n = a.shape[0], w.shape[0]
    multiplier, bias = epilogue_of(rng, n, a.shape[1])
    out = np.full((m, n), np.nan if dtype == np.float32 else -1, dtype)
    quant.linear_int8_cpu(a, w, multiplier, bias, True, 0.05, out)
    expected = quant.reference_linear_int8(a, w, multiplier, bias, True, 0.05, out)
    y = quant.reference_linear_int8(a, w, multiplier, bias, True, 0.05, out.astype(np.float32))
    check_epilogue(out, expected, y, 0.05)


def conv_of(rng, x, w, dtype, stride, padding, pool):
    out_channels, _, kernel, _ = w.shape
    batch, _, height, width = x.shape
    multiplier, bias = epilogue_of(rng, out_channels, w[0].size)
    out_h = (height + 2 * padding - kernel) // stride + 1
    out_w = (width + 2 * padding - kernel) // stride + 1
    shape = (batch, out_channels, out_h // pool, out_w // pool)
    out = np.full(shape, np.nan if dtype == np.float32 else -1, dtype)
    args = (x, w, multiplier, bias, True, 0.05, stride, padding, pool)
    quant.conv2d_int8_cpu(*args, out)
    expected = quant.reference_conv2d_int8(*args, out)
    y = quant.reference_conv2d_int8(*args, out.astype(np.float32))
    check_epilogue(out, expected, y, 0.05)


@U8S8
@pytest.mark.parametrize("k", [1, 3, 5, 7, 33, 301])
@pytest.mark.parametrize("m, n", [(1, 1), (5, 17), (37, 33)], ids=str)
@pytest.mark.parametrize("dtype", EPILOGUE_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("driver", ["serial", "parallel"])
def test_linear_u8s8_is_exact(rng, force_driver, paths, k, m, n, dtype, driver):
    force_driver(driver)
    linear_of(rng, codes(rng, (m, k), 0, 127), codes(rng, (n, k), -127, 127), dtype)
    assert paths == {"u8s8": 1, "int16": 0}


@U8S8
def test_linear_u8s8_at_the_limits_does_not_saturate(paths):
    """Every pair at 2 * 127 * 127 = 32258 (vpmaddubsw saturates past 32767), either sign."""
    k = 4099
    a = np.full((5, k), 127, np.int8)
    a[1, ::2] = 0
    w = np.full((3, k), -127, np.int8)
    w[1] = 127
    out = np.full((5, 3), -1, np.int32)
    ones = np.ones(3, np.float32)
    quant.linear_int8_cpu(a, w, ones, np.zeros(3, np.float32), False, 1.0, out)
    expected = quant.reference_linear_int8(a, w, ones, None, False, 1.0, out)
    assert expected[0, 1] == 127 * 127 * k
    np.testing.assert_array_equal(out.astype(np.int64), expected)
    assert paths == {"u8s8": 1, "int16": 0}


# (batch, channels, height, width, out channels, kernel, stride, padding): K = 1, 3, 5, 7, 33,
# 301 (channels * kernel**2), Cout and pixel tails
CONV_U8S8_GEOMETRIES = [
    (2, 1, 6, 6, 4, 1, 1, 0),
    (3, 3, 7, 5, 5, 1, 1, 0),
    (2, 5, 9, 8, 3, 1, 2, 1),
    (1, 7, 5, 6, 7, 1, 1, 0),
    (2, 33, 6, 7, 6, 1, 1, 1),
    (2, 301, 5, 5, 9, 1, 1, 0),
    (3, 32, 14, 14, 9, 3, 1, 1),
    (2, 3, 13, 11, 19, 3, 1, 1),
    (1, 2, 9, 10, 5, 2, 1, 0),
]


@U8S8
@pytest.mark.parametrize("geometry", CONV_U8S8_GEOMETRIES, ids=str)
@pytest.mark.parametrize("pool", [1, 2])
@pytest.mark.parametrize("dtype", EPILOGUE_DTYPES, ids=lambda d: np.dtype(d).name)
def test_conv_u8s8_is_exact(rng, force_driver, paths, geometry, pool, dtype):
    force_driver("parallel" if dtype == np.int8 else "serial")
    batch, channels, height, width, out_channels, kernel, stride, padding = geometry
    x = codes(rng, (batch, channels, height, width), 0, 127)
    w = codes(rng, (out_channels, channels, kernel, kernel), -127, 127)
    conv_of(rng, x, w, dtype, stride, padding, pool)
    assert paths == {"u8s8": 1, "int16": 0}


@U8S8
def test_conv_u8s8_in_several_chunks(rng, monkeypatch, paths):
    monkeypatch.setattr(quant, "images_per_chunk", lambda size: 1)
    x = codes(rng, (3, 2, 7, 7), 0, 127)
    conv_of(rng, x, codes(rng, (3, 2, 3, 3), -127, 127), np.int8, 1, 1, 2)
    assert paths == {"u8s8": 3, "int16": 0}


@pytest.mark.parametrize("culprit", ["activation", "weight"])
def test_fallback_to_int16_pairs_is_exact(rng, paths, culprit):
    """One activation < 0 or one weight at -128 (either would break vpmaddubsw's exactness):
    the int16 pairs run, exactly."""
    a, w = codes(rng, (9, 37), 0, 127), codes(rng, (18, 37), -127, 127)
    x, wc = codes(rng, (2, 3, 6, 6), 0, 127), codes(rng, (5, 3, 3, 3), -127, 127)
    if culprit == "activation":
        a[4, 20], x[1, 2, 3, 3] = -1, -128
    else:
        w[17, 36], wc[4, 2, 2, 2] = -128, -128
    linear_of(rng, a, w, np.int32)
    conv_of(rng, x, wc, np.int32, 1, 1, 2)
    assert paths == {"u8s8": 0, "int16": 2}


@pytest.mark.parametrize("n, k", [(1, 1), (16, 4), (19, 7), (33, 301)], ids=str)
def test_pack_quads_layout(rng, n, k):
    w = int8s(rng, (n, k))
    k4 = (k + 3) // 4
    packed, low = quant._pack_quads(w, k4)
    assert low == w.min()
    panels = -(-n // quant.TILE_N)
    expected = np.zeros((panels * quant.TILE_N, 4 * k4), np.int8)
    expected[:n, :k] = w
    # (panel, quad, column of the panel, byte of the quad)
    expected = expected.reshape(panels, quant.TILE_N, k4, 4).transpose(0, 2, 1, 3)
    np.testing.assert_array_equal(packed, expected.reshape(-1))


@pytest.mark.parametrize(
    "geometry", [(3, 6, 5, 3, 1, 1), (2, 7, 9, 3, 2, 0), (1, 4, 4, 2, 3, 2), (5, 3, 3, 1, 1, 0)]
)
def test_im2col_quads_layout(rng, geometry):
    """(channels, height, width, kernel, stride, padding): K of every residue mod 4."""
    channels, height, width, kernel, stride, padding = geometry
    x = int8s(rng, (2, channels, height, width))
    out_h = (height + 2 * padding - kernel) // stride + 1
    out_w = (width + 2 * padding - kernel) // stride + 1
    k = channels * kernel * kernel
    k4, pixels = (k + 3) // 4, out_h * out_w
    padded = -(-pixels // quant.TILE_N) * quant.TILE_N
    cols = np.full(padded * 4 * k4, 7, np.int8)  # every value written, the pads with 0
    quant._im2col_quads(x, 1, cols, k, kernel, kernel, stride, padding, out_h, out_w, width)
    xp = np.pad(x[1], ((0, 0), (padding, padding), (padding, padding)))
    expected = np.zeros((4 * k4, padded), np.int8)
    for oh in range(out_h):
        for ow in range(out_w):
            window = xp[:, oh * stride : oh * stride + kernel, ow * stride : ow * stride + kernel]
            expected[:k, oh * out_w + ow] = window.reshape(-1)
    panels = padded // quant.TILE_N
    got = cols.reshape(panels, k4, quant.TILE_N, 4).transpose(1, 3, 0, 2).reshape(4 * k4, padded)
    np.testing.assert_array_equal(got, expected)
