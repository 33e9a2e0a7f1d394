"""Fused Adam and SGD-with-momentum steps over 1M and 10M parameters, against the in-place NumPy
formulation and torch.optim (Adam also with fused=True)."""

FAMILIES = ("adam", "sgd_momentum")


def test_optim(measure, case_implementation):
    measure(case_implementation)
