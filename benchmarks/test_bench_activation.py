"""ReLU forward and backward at the MNIST CNN's first activation and its hidden layer."""

FAMILIES = ("relu_fwd", "relu_bwd")


def test_activation(measure, case_implementation):
    measure(case_implementation)
