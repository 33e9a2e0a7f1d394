"""The NT-Xent kernels (kernels/contrastive.py) against their float64 references, on the CPU (both
drivers) and in CUDA (simulator or GPU); the references against finite differences and a hand
computation; the whole sequence around the matmul family against ``reference_nt_xent``.

CUDA tests run in the simulator one block per row, so 2N stays at 6 or 10 rows (34 for the
symmetrisation, whose 32 × 32 tiles then leave ragged 2-row edges: a 2 × 2 grid of tiles).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels import contrastive
from fastnet.kernels.contrastive import (
    reference_nt_xent,
    reference_ntxent_normalize,
    reference_ntxent_normalize_backward,
    reference_ntxent_rows,
    reference_ntxent_symmetrise,
)
from fastnet.kernels.matmul import matmul_cpu, matmul_cuda
from numerics import assert_close, relative_error

SHAPES = [(6, 5), (10, 33)]  # (2N, D): odd widths, one wider than a warp's stride
TEMPERATURES = [0.1, 0.5, 1.0]
MATMUL = {"cpu": matmul_cpu, "cuda": matmul_cuda}


def op(name: str, variant: str):
    return getattr(contrastive, f"{name}_{variant}")


@pytest.fixture(params=["cpu-serial", "cpu-parallel", "cuda"])
def variant(request, force_driver) -> str:
    """ "cpu" (with its serial, then its parallel driver forced) or "cuda"."""
    name, _, driver = request.param.partition("-")
    if driver:
        force_driver(driver)
    return name


@pytest.fixture(params=["serial", "parallel"])
def cpu_driver(request, force_driver):
    force_driver(request.param)


def embeddings(rng, rows, width, dtype=np.float32):
    return (rng.standard_normal((rows, width)) * rng.uniform(0.5, 3.0, (rows, 1))).astype(dtype)


def cosines(rng, rows, width, dtype=np.float32):
    units = reference_ntxent_normalize(embeddings(rng, rows, width, np.float64))
    return (units @ units.T).astype(dtype)


def numerical_gradient(function, x, step=1e-6):
    """Central differences of the scalar function(x) at every element of x (float64)."""
    gradient = np.empty_like(x)
    for index in np.ndindex(x.shape):
        shifted = [x.copy(), x.copy()]
        shifted[0][index] += step
        shifted[1][index] -= step
        gradient[index] = (function(shifted[0]) - function(shifted[1])) / (2 * step)
    return gradient


# --- the references ----------------------------------------------------------------------------


def test_reference_of_one_pair_is_zero():
    """With N = 1 a row's only other row is its positive: l = -S_01 + log exp(S_01) = 0."""
    row_losses, gradient = reference_ntxent_rows(np.array([[1.0, 0.3], [0.3, 1.0]]), 2.0)
    np.testing.assert_allclose(row_losses, 0.0, atol=1e-15)
    np.testing.assert_allclose(gradient, 0.0, atol=1e-15)


def test_reference_rows_match_a_loop_over_pairs(rng):
    similarity = cosines(rng, 6, 4, np.float64)
    row_losses, _ = reference_ntxent_rows(similarity, 1 / 0.3)
    for row in range(6):
        others = [similarity[row, k] / 0.3 for k in range(6) if k != row]
        positive = similarity[row, (row + 3) % 6] / 0.3
        expected = -positive + np.log(sum(np.exp(value) for value in others))
        assert abs(row_losses[row] - expected) < 1e-12


def test_reference_gradient_matches_finite_differences(rng):
    z = embeddings(rng, 6, 5, np.float64)
    weights = rng.uniform(0.5, 1.5, 6)

    def weighted_loss(values):
        return float(weights @ reference_nt_xent(values, 0.4)[0])

    units = reference_ntxent_normalize(z)
    _, gradient = reference_ntxent_rows(units @ units.T, 1 / 0.4)
    dunits = reference_ntxent_symmetrise(gradient, weights) @ units
    analytic = reference_ntxent_normalize_backward(z, dunits, np.ones(1))
    assert relative_error(analytic, numerical_gradient(weighted_loss, z)) < 1e-7
    _, unweighted = reference_nt_xent(z, 0.4)
    numeric = numerical_gradient(lambda values: reference_nt_xent(values, 0.4)[0].sum(), z)
    assert relative_error(unweighted, numeric) < 1e-7


# --- each op against its reference -------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_normalize(variant, shape, rng):
    z = embeddings(rng, *shape)
    z[1] *= 1e-14  # a norm under ε: divided by ε, as F.normalize
    assert_close(op("ntxent_normalize", variant)(z), reference_ntxent_normalize(z), np.float32)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("shape", SHAPES)
def test_rows_write_losses_and_overwrite_the_cosines_with_g(variant, shape, temperature, rng):
    similarity = cosines(rng, *shape)
    expected_losses, expected_gradient = reference_ntxent_rows(similarity, 1 / temperature)
    gradient = similarity.copy()
    row_losses = op("ntxent_rows", variant)(gradient, 1 / temperature)
    assert_close(row_losses, expected_losses, np.float32, what="row losses")
    assert_close(gradient, expected_gradient, np.float32, what="G")
    assert np.all(np.diag(gradient) == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_cpu_in_float64_and_at_extreme_temperatures(dtype, rng, cpu_driver):
    """T = 0.01 puts logits at ±100: exp would overflow float32 without the row max."""
    for temperature in (0.01, 0.5):
        similarity = cosines(rng, 10, 7, dtype)
        expected_losses, expected_gradient = reference_ntxent_rows(similarity, 1 / temperature)
        row_losses = contrastive.ntxent_rows_cpu(similarity, 1 / temperature)
        assert_close(row_losses, expected_losses, dtype, what="row losses")
        assert_close(similarity, expected_gradient, dtype, what="G")


def test_rows_cuda_at_a_low_temperature(rng):
    similarity = cosines(rng, 6, 5)
    expected_losses, expected_gradient = reference_ntxent_rows(similarity, 100.0)
    assert_close(contrastive.ntxent_rows_cuda(similarity, 100.0), expected_losses, np.float32)
    assert_close(similarity, expected_gradient, np.float32)


def test_a_nan_similarity_makes_its_row_nan(rng):
    similarity = cosines(rng, 6, 5)
    similarity[2, 4] = np.nan
    row_losses = contrastive.ntxent_rows_cpu(similarity, 2.0)
    assert np.isnan(row_losses[2]) and np.isfinite(np.delete(row_losses, 2)).all()


@pytest.mark.parametrize("weighted", [False, True], ids=["uniform", "weighted"])
@pytest.mark.parametrize("in_place", [False, True], ids=["new", "in_place"])
def test_symmetrise(variant, weighted, in_place, rng):
    rows = 34 if variant == "cuda" else 70  # ragged tiles: 2 × 2 on CUDA, 3 tile rows on CPU
    gradient = rng.standard_normal((rows, rows)).astype(np.float32)
    row_weights = rng.uniform(0.1, 2.0, rows).astype(np.float32) if weighted else None
    expected = reference_ntxent_symmetrise(gradient, row_weights)
    out = gradient if in_place else None
    result = op("ntxent_symmetrise", variant)(gradient, row_weights, out=out)
    assert (result is gradient) == in_place
    assert_close(result, expected, np.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_normalize_backward(variant, shape, rng):
    z = embeddings(rng, *shape)
    z[3] *= 1e-14  # a clamped norm: no projection, divided by ε
    dunits = rng.standard_normal(shape).astype(np.float32)
    scale = np.array([0.37], np.float32)
    expected = reference_ntxent_normalize_backward(z, dunits, scale)
    got = op("ntxent_normalize_backward", variant)(z, dunits, scale)
    unclamped = np.arange(shape[0]) != 3  # the clamped row is 1e12 times larger: judge apart
    assert_close(got[unclamped], expected[unclamped], np.float32, what="unclamped rows")
    assert_close(got[3], expected[3], np.float32, what="the clamped row")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_ops_in_both_dtypes_compose_to_the_loss_and_its_gradient(dtype, rng, cpu_driver):
    check_sequence("cpu", embeddings(rng, 10, 33, dtype), 0.5, dtype)


def test_cuda_ops_compose_to_the_loss_and_its_gradient(rng):
    check_sequence("cuda", embeddings(rng, 6, 5), 0.5, np.float32)


def check_sequence(variant, z, temperature, dtype):
    """The functional layer's sequence (kernels/contrastive.py's docstring) for the row losses'
    sum, against reference_nt_xent."""
    matmul = MATMUL[variant]
    units = op("ntxent_normalize", variant)(z)
    pairs = matmul(units, units, False, True)
    row_losses = op("ntxent_rows", variant)(pairs, 1 / temperature)
    op("ntxent_symmetrise", variant)(pairs, out=pairs)
    dunits = matmul(pairs, units)
    dz = op("ntxent_normalize_backward", variant)(z, dunits, np.ones(1, dtype))
    expected_losses, expected_dz = reference_nt_xent(z, temperature)
    assert_close(row_losses, expected_losses, dtype, what="row losses")
    assert_close(dz, expected_dz, dtype, what="dz")


# --- errors ------------------------------------------------------------------------------------


def test_bad_embeddings_raise_clear_errors(variant, rng):
    normalize = op("ntxent_normalize", variant)
    with pytest.raises(ValueError, match="2N rows"):
        normalize(embeddings(rng, 5, 4))
    with pytest.raises(ValueError, match="2-D"):
        normalize(rng.standard_normal(6).astype(np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        normalize(np.ones((4, 3), np.int32))
    z = embeddings(rng, 6, 4)
    backward = op("ntxent_normalize_backward", variant)
    with pytest.raises(ValueError, match="dunits"):
        backward(z, z[:, :3], np.ones(1, np.float32))
    with pytest.raises(ValueError, match="scale"):
        backward(z, z, np.ones(2, np.float32))
    with pytest.raises(ValueError, match="scale"):
        backward(z, z, np.ones(1, np.float64))


def test_bad_similarities_raise_clear_errors(variant, rng):
    rows = op("ntxent_rows", variant)
    with pytest.raises(ValueError, match="square"):
        rows(cosines(rng, 6, 4)[:, :5], 2.0)
    with pytest.raises(ValueError, match="square"):
        rows(cosines(rng, 5, 4), 2.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        rows(np.asfortranarray(cosines(rng, 6, 4)), 2.0)
    for bad in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="temperature"):
            rows(cosines(rng, 6, 4), bad)
    symmetrise = op("ntxent_symmetrise", variant)
    with pytest.raises(ValueError, match="row_weights"):
        symmetrise(cosines(rng, 6, 4), np.ones(5, np.float32))
    with pytest.raises(ValueError, match="out"):
        symmetrise(cosines(rng, 6, 4), out=np.empty((6, 6), np.float64))
