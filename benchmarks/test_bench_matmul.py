"""The GEMMs of the MNIST CNN (conv2 as im2col @ W^T, fc1) and of a CIFAR ResNet conv layer:
fastnet's CPU matmul is NumPy's BLAS, so the peer is PyTorch's."""

FAMILIES = ("matmul",)


def test_matmul(measure, case_implementation):
    measure(case_implementation)
