"""The kernel-family contract (kernels/_contract.py): what every family declares holds, and the
backend and the benchmarks can rely on it."""

from __future__ import annotations

import importlib

import pytest

import fastnet
from fastnet.kernels._contract import CaseSpec, Family, KernelSpec, families

FAMILIES = families()


@pytest.fixture(params=FAMILIES, ids=[family.name for family in FAMILIES])
def family(request):
    return request.param


def test_there_are_families():
    names = [family.name for family in FAMILIES]
    assert {"activation", "conv", "pool", "winograd"} <= set(names)
    assert len(names) == len(set(names))


def test_every_op_has_a_cpu_and_a_cuda_entry_point(family):
    module = importlib.import_module(family.module)
    assert family.module == module.__name__ and module.FAMILY is family
    assert family.ops and len(family.ops) == len(set(family.ops))
    for op in family.ops:
        for variant in ("cpu", "cuda"):
            function = getattr(module, f"{op}_{variant}", None)
            assert callable(function), f"{family.name}: {op}_{variant} is missing"
            assert family.entry_point(op, variant) is function


def test_references_are_callables_of_declared_ops(family):
    for op, reference in family.references.items():
        assert op in family.ops, f"{family.name}: a reference for the undeclared op {op!r}"
        assert callable(reference), f"{family.name}: the reference of {op} is not callable"


def test_no_op_is_declared_by_two_families():
    owners: dict[str, str] = {}
    for family in FAMILIES:
        for op in family.ops:
            assert op not in owners, f"{op} is declared by {owners.get(op)} and {family.name}"
            owners[op] = family.name


def test_every_family_has_cuda_kernels(family):
    specs = family.cuda_kernels()
    assert specs and all(isinstance(spec, KernelSpec) for spec in specs)
    names = [spec.name for spec in specs]
    assert len(names) == len(set(names))


def test_bench_case_ids_are_unique_across_families():
    seen: dict[str, str] = {}
    for family in FAMILIES:
        for quick in (True, False):
            specs = family.bench_cases(quick)
            assert all(isinstance(spec, CaseSpec) for spec in specs), family.name
            for spec in specs:
                key = f"{spec.id} quick={quick}"
                assert key not in seen, f"{spec.id} in {seen.get(key)} and {family.name}"
                seen[key] = family.name
                assert spec.implementations[0] == "fastnet" and " " not in spec.key


def test_the_cpu_device_binds_every_op_to_its_cpu_function(family):
    for op in family.ops:
        assert getattr(fastnet.backend.CPU, op) is family.entry_point(op, "cpu")


def test_a_family_with_a_missing_entry_point_fails_loudly():
    broken = Family(
        name="broken",
        module="fastnet.kernels.activation",
        ops=("relu_sideways",),
        references={},
        cuda_kernels=list,
    )
    with pytest.raises(AttributeError, match="relu_sideways_cpu"):
        broken.entry_point("relu_sideways", "cpu")
