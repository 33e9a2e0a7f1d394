"""im2col, col2im and the forward convolution at the MNIST CNN's conv layers (batch 64 and 256) and
a CIFAR ResNet's 64-channel 16x16 layer (batch 128); a 3x3 layer's forward + backward
(``conv2d_train``) at MNIST's conv2 and ResNet-20's stages, by Winograd and by im2col."""

FAMILIES = ("im2col", "col2im", "conv2d", "conv2d_train")


def test_conv(measure, case_implementation):
    measure(case_implementation)
