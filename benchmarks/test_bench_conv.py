"""im2col, col2im and the forward convolution (im2col + GEMM) at the MNIST CNN's conv layers
(batch 64 and 256) and a CIFAR ResNet's 64-channel 16x16 layer (batch 128)."""

FAMILIES = ("im2col", "col2im", "conv2d")


def test_conv(measure, case_implementation):
    measure(case_implementation)
