"""Perturbation sets: label parsing, separator clashes, member features and composition of member fields."""

from __future__ import annotations

import numpy as np
import pytest

from envs.perturbation_features import PerturbationFeaturizer
from envs.perturbation_sets import PerturbationSetError, SetSyntax, canonical_labels
from envs.set_features import SetFeaturizer, unexpressible_members
from envs.set_hints import compose_fields, member_orders

SETS = SetSyntax("+", "ctrl")


def test_members_drop_the_control_and_ignore_order():
    assert SETS.members("A+B") == ("A", "B")
    assert SETS.members(" A + B ") == ("A", "B")
    assert SETS.members("A+ctrl") == ("A",) and SETS.members("ctrl+A") == ("A",)
    assert SETS.members("ctrl") == () and SETS.members("ctrl+ctrl") == ()
    assert SETS.key("A+B") == SETS.key("B+A") and SETS.is_set("A+B") and not SETS.is_set("A+ctrl")
    assert SETS.spelling("A+ctrl") == "A" and SETS.spelling("B + A") == "B+A"
    assert SETS.resolve("MAP2K6+KLF1", ["KLF1+MAP2K6", "KLF1"]) == "KLF1+MAP2K6"
    assert SETS.resolve("B+A", ["A", "B"]) == "B+A"  # never observed: kept as written


@pytest.mark.parametrize("label", ["A+", "+A", "A++B"])
def test_an_empty_member_is_a_separator_clash_with_the_fix(label):
    with pytest.raises(PerturbationSetError, match=r"empty member.*--set-separator"):
        SETS.members(label)


def test_member_twice_and_control_with_the_separator_are_refused():
    with pytest.raises(PerturbationSetError, match="more than once"):
        SETS.members("A+A")
    with pytest.raises(PerturbationSetError, match=r"control label 'non\+targeting' contains"):
        SetSyntax("+", "non+targeting")


def test_no_sets_reads_every_label_as_one_perturbation():
    for off in (None, "none", ""):
        syntax = SetSyntax(off, "ctrl")
        assert syntax.separator is None and syntax.members("IL4+IL13") == ("IL4+IL13",)
    labels = np.array(["A+", "ctrl"])
    assert canonical_labels(labels, SetSyntax(None, "ctrl")) is labels


def test_canonical_labels_merge_spellings_of_one_set_and_keep_others():
    labels = np.array(["ctrl", "A", "A+ctrl", "B+A", "B+A", "A+B", "SAMD1+PTPN12"])
    out = canonical_labels(labels, SETS)
    assert out.tolist() == ["ctrl", "A", "A", "B+A", "B+A", "B+A", "SAMD1+PTPN12"]  # most frequent spelling wins
    plain = np.array(["ctrl", "A", "B"])
    assert canonical_labels(plain, SETS) is plain  # nothing to read: the same array, bit for bit


def _featurizer(training=("G1", "X", "Y+Z")):
    rng = np.random.default_rng(0)
    return SetFeaturizer(rng.normal(size=(4, 6)), [f"G{i}" for i in range(6)], list(training), sets=SETS)


def test_set_features_are_the_mean_of_member_features_and_singles_are_unchanged():
    sets = _featurizer()
    plain = PerturbationFeaturizer(sets.components, [f"G{i}" for i in range(6)], ["G1", "X", "Y", "Z"])
    assert sets.fallback == ["X", "Y", "Z"]  # members of training sets get their own ids
    for single in ("G1", "G3", "X", "Y"):
        np.testing.assert_array_equal(sets(single), plain(single))
    np.testing.assert_allclose(sets("G1+X"), (plain("G1") + plain("X")) / 2, atol=1e-7)
    np.testing.assert_array_equal(sets("G1+X"), sets("X+G1"))  # permutation-invariant
    np.testing.assert_array_equal(sets("X+ctrl"), sets("X"))
    assert np.abs(sets("G1+G2+X")).max() <= 1.0  # stays in the observation box
    assert unexpressible_members(sets, "G1+nope") == ["nope"] and unexpressible_members(sets, "Y+G4") == []


def test_sequential_equals_additive_for_constant_fields_and_is_order_free():
    states = np.random.default_rng(1).normal(size=(7, 3))
    a, b = np.array([1.0, 0.0, -1.0]), np.array([0.5, 2.0, 0.0])
    constant = [lambda z: np.broadcast_to(a, z.shape), lambda z: np.broadcast_to(b, z.shape)]
    np.testing.assert_allclose(compose_fields(constant, states, "sequential"), np.broadcast_to(a + b, states.shape))
    np.testing.assert_allclose(compose_fields(constant, states, "additive"), np.broadcast_to(a + b, states.shape))
    # B acts only where z[0] > 0.5: A carries cells there, so A-then-B moves them further than the sum
    step = np.array([2.0, 0.0, 0.0])
    fields = [lambda z: np.broadcast_to(step, z.shape), lambda z: np.where(z[:, :1] > 0.5, 1.0, 0.0) * np.ones(3)]
    start = np.zeros((1, 3))
    assert compose_fields(fields, start, "additive")[0, 1] == 0.0
    np.testing.assert_allclose(compose_fields(fields, start, "sequential"), [[2.5, 0.5, 0.5]])  # mean of the two orders
    np.testing.assert_allclose(compose_fields(fields[::-1], start, "sequential"),
                               compose_fields(fields, start, "sequential"))
    with pytest.raises(ValueError, match="additive"):
        compose_fields(fields, start, "both")


def test_member_orders_cover_every_member_first():
    assert len(member_orders(2)) == 2 and len(member_orders(4)) == 24
    orders = member_orders(6)
    assert len(orders) == 12 and {o[0] for o in orders} == set(range(6)) and all(sorted(o) == list(range(6))
                                                                                 for o in orders)
