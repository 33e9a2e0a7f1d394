"""Every benchmark case, one test per (case, implementation): each kernel family's declared cases
(``FAMILY.bench_cases``) and the op-level ones, from :func:`fastnet.bench.case_specs`. The test
ids are ``<family>-<key>-<implementation>``, so ``-k relu`` or ``-k conv2d_train`` picks cases."""


def test_case(measure, case_implementation):
    measure(case_implementation)
