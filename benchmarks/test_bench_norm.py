"""Batch norm (training mode, forward and backward) at a ResNet-20 stage-1 activation, layer norm
and the attention rows' softmax at the transformer's shapes (batch 32, sequence 64, d_model 128,
4 heads)."""

FAMILIES = ("batchnorm_fwd", "batchnorm_bwd", "layernorm_fwd", "layernorm_bwd", "softmax_fwd", "softmax_bwd")


def test_norm(measure, case_implementation):
    measure(case_implementation)
