"""Per-op Python overhead: a 4-element add through the tensor layer, forward only and forward +
backward, against NumPy's bare add and PyTorch's autograd."""

FAMILIES = ("overhead",)


def test_overhead(measure, case_implementation):
    measure(case_implementation)
