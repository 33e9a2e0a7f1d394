"""2x2 max-pool forward (values and argmax) and backward at the MNIST CNN's two pooling layers."""

FAMILIES = ("maxpool_fwd", "maxpool_bwd")


def test_pool(measure, case_implementation):
    measure(case_implementation)
