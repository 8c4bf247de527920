"""Population stability index: hand-computed cases, no drift vs a 2-std shift, ties, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from momentum.drift import (
    PSI_ALERT,
    PSI_EPSILON,
    PSI_WARN,
    feature_psi,
    level_shares,
    psi,
    signal_psi,
    window_psi_baseline,
)
from momentum.manifest import QUANTILE_LEVELS
from tests.momentum.manifests import make_manifest

EPS = PSI_EPSILON


def _term(a: float, e: float) -> float:
    """One bin's contribution (a - e) ln(a / e)."""
    return (a - e) * math.log(a / e)


def test_levels_are_those_of_the_design():
    assert (PSI_WARN, PSI_ALERT, PSI_EPSILON) == (0.1, 0.2, 1e-4)


def test_two_bins_by_hand():
    # edges 0 | 1 | 2: bins (-inf, 1] and (1, inf), 50% each; live 3/4 and 1/4
    got = psi([0.0, 1.0, 2.0], [0.2, 0.5, 0.9, 1.5])
    assert got == pytest.approx(_term(0.75, 0.5) + _term(0.25, 0.5), rel=1e-12)
    assert got == pytest.approx(math.log(3) / 4, rel=1e-12)


def test_explicit_expected_shares_by_hand():
    got = psi([0.0, 1.0, 2.0], [0.5, 1.5], expected=[0.25, 0.75])
    assert got == pytest.approx(_term(0.5, 0.25) + _term(0.5, 0.75), rel=1e-12)


def test_matching_shares_give_exactly_zero():
    assert psi([0.0, 1.0, 2.0, 3.0], [0.5, 1.5, 2.5]) == pytest.approx(0.0, abs=1e-15)


def test_outer_bins_are_open_and_bins_closed_on_the_right():
    # far outside the reference range still counts, in the outer bins: no drift here
    assert psi([0.0, 1.0, 2.0], [-100.0, 100.0]) == pytest.approx(0.0, abs=1e-15)
    # a value on the inner edge belongs to the bin below: (−inf, 1] holds both
    both_low = psi([0.0, 1.0, 2.0], [1.0, 0.5])
    assert both_low == pytest.approx(_term(1.0, 0.5) + _term(EPS, 0.5), rel=1e-12)


def test_an_empty_bin_stays_finite_through_the_epsilon():
    got = psi(np.arange(11.0), np.full(50, 0.5))  # every live value in the first decile
    expected = _term(1.0, 0.1) + 9 * _term(EPS, 0.1)
    assert got == pytest.approx(expected, rel=1e-12)
    assert math.isfinite(got) and got > PSI_ALERT


def test_same_distribution_as_the_reference_is_near_zero_and_a_two_std_shift_alerts():
    rng = np.random.default_rng(7)
    # the reference: exact deciles of N(0, 1) (outer edges finite, the bins are open anyway)
    edges = norm.ppf(QUANTILE_LEVELS)
    edges[0], edges[-1] = -8.0, 8.0
    same = rng.standard_normal(100_000)
    # no drift: only sampling noise, about (bins - 1) / n = 9e-5
    assert psi(edges, same) < 1e-3
    shifted = psi(edges, same + 2.0)
    assert shifted > PSI_ALERT
    # by hand from the normal cdf: live shares of N(2, 1) in the reference deciles
    inner = edges[1:-1]
    live = np.diff(np.concatenate([[0.0], norm.cdf(inner - 2.0), [1.0]]))
    by_hand = sum(_term(max(a, EPS), 0.1) for a in live)
    assert shifted == pytest.approx(by_hand, rel=0.05)


def test_non_finite_values_are_ignored_and_none_left_gives_nan():
    edges = [0.0, 1.0, 2.0]
    finite = [0.2, 0.5, 0.9, 1.5]
    with_gaps = np.array([[0.2, np.nan, 0.5], [np.inf, 0.9, 1.5], [-np.inf, np.nan, np.nan]])
    assert psi(edges, with_gaps) == psi(edges, finite)
    assert math.isnan(psi(edges, [np.nan, np.inf]))
    assert math.isnan(psi(edges, []))


def test_a_point_mass_in_the_reference_is_not_drift():
    # edges 0, 1, 1, 2: the middle third of the reference sits on the value 1 exactly
    # (zero-width bin); its share belongs to (0, 1], so (-inf, 1] expects 2/3
    reference_like = [0.5, 1.0, 1.0, 1.0, 1.5, 1.8]  # 4 of 6 at or below 1
    assert psi([0.0, 1.0, 1.0, 2.0], reference_like) == pytest.approx(0.0, abs=1e-15)
    # a tie at the maximum: nothing of the reference lies above 2
    assert psi([0.0, 1.0, 2.0, 2.0], [0.5, 2.0, 2.0]) == pytest.approx(0.0, abs=1e-15)
    # positions saturated at X = 1 in the reference and live
    assert psi([1.0] * 11, np.ones(40)) == pytest.approx(0.0, abs=1e-15)
    # ... and live positions that are not saturated any more are drift
    assert psi([1.0] * 11, np.full(40, 0.3)) > PSI_ALERT


@pytest.mark.parametrize(
    ("edges", "match"),
    [
        ([0.0, 2.0, 1.0], "non-decreasing; edge 2"),
        ([0.0, 1.0], "at least 3"),
        ([[0.0, 1.0, 2.0]], "at least 3"),
        ([0.0, np.nan, 2.0], "finite"),
        (["a", "b", "c"], "sequence of numbers"),
    ],
)
def test_bad_edges_name_the_parameter(edges, match):
    with pytest.raises(ValueError, match=f"`edges`.*{match}"):
        psi(edges, [0.5])


@pytest.mark.parametrize(
    ("expected", "match"),
    [
        ([1.0], "one share per bin"),
        ([0.5, 0.25, 0.25], "one share per bin"),
        ([0.7, 0.7], "sum to 1"),
        ([1.5, -0.5], ">= 0"),
    ],
)
def test_bad_expected_shares_name_the_parameter(expected, match):
    with pytest.raises(ValueError, match=f"`expected`.*{match}"):
        psi([0.0, 1.0, 2.0], [0.5], expected=expected)


def test_level_shares():
    np.testing.assert_allclose(level_shares(QUANTILE_LEVELS), np.full(10, 0.1), atol=1e-15)
    # outer bins are open: everything below the second edge, above the second-to-last
    np.testing.assert_allclose(level_shares([0.05, 0.5, 0.9, 0.99]), [0.5, 0.4, 0.1])
    for bad in ([0.0, 1.0], [0.0, 0.6, 0.4, 1.0], [0.0, 1.0, 1.0]):
        with pytest.raises(ValueError, match="`levels`"):
            level_shares(bad)


@pytest.fixture
def manifest(tmp_path):
    """Reference deciles 0, 1, ..., 10 for every feature; signal deciles -1, -0.8, ..., 1."""
    model_file = tmp_path / "model.onnx"
    model_file.write_bytes(b"not a graph: only its hash matters here")
    return make_manifest(model_file)


def test_feature_psi_per_feature_in_manifest_order(manifest):
    names = manifest.features.names
    # 100 values at the centres of the reference deciles: 10% in each, PSI 0
    centres = np.linspace(0.05, 9.95, 100)
    values = np.repeat(centres[:, None, None], len(names), axis=2).reshape(25, 4, len(names))
    values[..., 1] += 20.0  # feature 1: everything above the reference maximum
    values[0, 0, 2] = np.nan  # ignored
    got = feature_psi(manifest, values)
    assert list(got) == names
    assert got[names[0]] == pytest.approx(0.0, abs=1e-12)
    assert got[names[1]] == pytest.approx(9 * _term(EPS, 0.1) + _term(1.0, 0.1), rel=1e-12)
    # feature 2 lost one value of the first bin: 9/99 there, 10/99 elsewhere
    assert got[names[2]] == pytest.approx(_term(9 / 99, 0.1) + 9 * _term(10 / 99, 0.1), rel=1e-12)


def test_feature_psi_refuses_a_wrong_shape(manifest):
    d = len(manifest.features.names)
    for shape in [(5, 3), (5, 3, d - 1)]:
        with pytest.raises(ValueError, match=r"`values` must have shape \(rows, N, 8\)"):
            feature_psi(manifest, np.zeros(shape))


def test_signal_psi_against_the_manifests_signal_deciles(manifest):
    # signal deciles -1, -0.8, ..., 1: values at the bin centres -> 0; all long at 0.95 -> alert
    centres = np.linspace(-0.9, 0.9, 10)
    assert signal_psi(manifest, np.tile(centres, (3, 1))) == pytest.approx(0.0, abs=1e-12)
    assert signal_psi(manifest, np.full((3, 4), 0.95)) == pytest.approx(
        9 * _term(EPS, 0.1) + _term(1.0, 0.1), rel=1e-12
    )
    assert math.isnan(signal_psi(manifest, np.full((2, 3), np.nan)))


# --------------------------------------------------------------------------------------------
# the baseline: how far the reference period drifts from itself
# --------------------------------------------------------------------------------------------


def _deciles(values) -> list[float]:
    return np.nanquantile(values, np.linspace(0, 1, 11)).tolist()


def test_a_baseline_is_a_quantile_of_the_window_psis_of_the_reference_rows():
    rng = np.random.default_rng(3)
    values = rng.standard_normal((300, 5))
    edges = _deciles(values)
    scores = [psi(edges, values[s : s + 63]) for s in range(0, 300 - 63 + 1)]
    # every window scored (238 <= max_windows): exactly numpy's quantile of them
    got = window_psi_baseline(edges, values, 63, level=0.9, max_windows=1000)
    assert got == pytest.approx(np.quantile(scores, 0.9), rel=1e-12)
    # at most max_windows windows, evenly spaced, the first and the last included
    starts = np.unique(np.linspace(0, 300 - 63, 10).round().astype(int))
    few = [psi(edges, values[s : s + 63]) for s in starts]
    assert window_psi_baseline(edges, values, 63, max_windows=10) == pytest.approx(
        np.quantile(few, 0.95), rel=1e-12
    )


def test_persistence_raises_the_baseline_far_above_the_alert_level():
    rng = np.random.default_rng(4)
    noise = rng.standard_normal((1500, 20))
    trend = np.cumsum(rng.standard_normal(1500))[:, None] / 10 + 0.2 * noise
    assert window_psi_baseline(_deciles(noise), noise, 63) < PSI_WARN
    assert window_psi_baseline(_deciles(trend), trend, 63) > 5 * PSI_ALERT


def test_a_baseline_needs_a_full_window_of_finite_values():
    edges = [0.0, 1.0, 2.0]
    assert window_psi_baseline(edges, np.ones((10, 3)), 63) is None
    assert window_psi_baseline(edges, np.full((80, 3), np.nan), 63) is None
    with pytest.raises(ValueError, match="window"):
        window_psi_baseline(edges, np.ones((80, 3)), 1)
    with pytest.raises(ValueError, match="level"):
        window_psi_baseline(edges, np.ones((80, 3)), 63, level=1.0)
