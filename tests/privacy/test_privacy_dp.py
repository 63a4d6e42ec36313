"""Differential privacy: published DP-SGD figures, Gaussian calibration, accountant behaviour.

Published figures: TensorFlow Privacy, tutorials/README.md (MNIST DP-SGD, N = 60,000,
batch 256, so q = 256/60000 and steps = epochs * 60000 // 256, delta = 1e-5, RDP
accountant with Mironov's conversion):

* older README: noise 1.1 for 60 epochs gives eps = 3.01 (1.03 after 1 epoch, 1.11
  after 2); noise 1.3 for 15 epochs gives 1.19; noise 0.7 for 45 epochs gives 7.10;
* current README: noise 1.12 for 60 epochs gives eps = 2.92 (1.00 after 1 epoch, 1.04
  after 2); noise 1.2 for 10 epochs gives 1.20.

The 2.92 figure is for noise 1.12, not 1.1.  dp_accounting's default conversion is
tighter, so the same run reports less: about 2.60 for noise 1.1.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from privacy.dp import (
    PrivacyAccountant,
    PrivacySpend,
    calibrate_noise_multiplier,
    dpsgd_epsilon,
    gaussian_sigma,
)
from privacy.errors import DPError, PrivacyError

Q = 256 / 60000
DELTA = 1e-5


def steps(epochs: int) -> int:
    return epochs * 60000 // 256


@pytest.mark.parametrize(
    ("noise", "epochs", "published"),
    [
        (1.1, 60, 3.01),
        (1.1, 1, 1.03),
        (1.1, 2, 1.11),
        (1.3, 15, 1.19),
        (0.7, 45, 7.10),
        (1.12, 60, 2.92),
        (1.12, 1, 1.00),
        (1.12, 2, 1.04),
        (1.2, 10, 1.20),
    ],
)
def test_matches_published_tensorflow_privacy_mnist_figures(noise: float, epochs: int, published: float) -> None:
    eps = dpsgd_epsilon(noise, Q, steps(epochs), DELTA, conversion="classic")
    assert abs(eps - published) <= 0.005 + 1e-9, eps


def test_default_conversion_is_tighter_than_the_published_one() -> None:
    classic = dpsgd_epsilon(1.1, Q, steps(60), DELTA, conversion="classic")
    improved = dpsgd_epsilon(1.1, Q, steps(60), DELTA)
    assert improved < classic
    assert improved == pytest.approx(2.597, abs=0.005)


def test_pld_accountant_is_at_least_as_tight_as_rdp() -> None:
    rdp = dpsgd_epsilon(1.1, Q, 500, DELTA)
    pld = dpsgd_epsilon(1.1, Q, 500, DELTA, accountant="pld")
    assert 0 < pld <= rdp


def test_accountant_steps_compose_and_report_a_spend() -> None:
    one_by_one = PrivacyAccountant(1.1, Q)
    for i in range(50):
        one_by_one.step()
        if i == 9:
            early = one_by_one.epsilon(DELTA)  # asking midway must not lose or double-count steps
    at_once = PrivacyAccountant(1.1, Q)
    at_once.step(50)
    assert one_by_one.steps == at_once.steps == 50
    assert one_by_one.epsilon(DELTA) == pytest.approx(at_once.epsilon(DELTA), rel=1e-9)
    assert 0 < early < at_once.epsilon(DELTA)
    assert early == pytest.approx(dpsgd_epsilon(1.1, Q, 10, DELTA), rel=1e-9)
    assert PrivacyAccountant(1.1, Q).epsilon(DELTA) == 0.0
    spend = at_once.spent(DELTA)
    assert isinstance(spend, PrivacySpend)
    assert spend.to_dict() == {
        "epsilon": at_once.epsilon(DELTA),
        "delta": DELTA,
        "mechanism": "poisson_subsampled_gaussian",
        "noise_multiplier": 1.1,
        "sample_rate": Q,
        "steps": 50,
        "accountant": "dp_accounting.rdp",
        "unit": "record",
    }


@given(st.floats(0.8, 3.0), st.integers(1, 2000))
@settings(max_examples=8, deadline=None)
def test_epsilon_grows_with_steps_and_shrinks_with_noise(noise: float, n: int) -> None:
    base = dpsgd_epsilon(noise, 0.01, n, DELTA)
    assert dpsgd_epsilon(noise, 0.01, n + 100, DELTA) > base
    assert dpsgd_epsilon(noise * 1.5, 0.01, n, DELTA) < base


@pytest.mark.parametrize(("target", "q", "n"), [(2.0, Q, steps(60)), (1.0, 0.01, 1000), (6.0, 0.02, 300)])
def test_calibrated_noise_meets_the_budget_tightly(target: float, q: float, n: int) -> None:
    nm = calibrate_noise_multiplier(target, DELTA, q, n, tol=1e-3)
    assert dpsgd_epsilon(nm, q, n, DELTA) <= target
    assert dpsgd_epsilon(nm - 2e-3, q, n, DELTA) > target


def _gaussian_delta(sigma: float, eps: float) -> float:
    """Exact delta of the Gaussian mechanism with sensitivity 1 (Balle & Wang 2018, Thm 8)."""
    return norm.cdf(1 / (2 * sigma) - eps * sigma) - math.exp(eps) * norm.cdf(-1 / (2 * sigma) - eps * sigma)


@pytest.mark.parametrize(("eps", "delta"), [(0.1, 1e-5), (0.5, 1e-6), (1.0, 1e-5), (3.0, 1e-5)])
def test_analytic_gaussian_sigma_is_the_smallest_that_works(eps: float, delta: float) -> None:
    sigma = gaussian_sigma(eps, delta)
    assert _gaussian_delta(sigma, eps) <= delta * (1 + 1e-6)
    assert _gaussian_delta(sigma * 0.99, eps) > delta
    assert gaussian_sigma(eps, delta, sensitivity=4.0) == pytest.approx(4 * sigma)


def test_classic_gaussian_sigma() -> None:
    assert gaussian_sigma(0.5, 1e-5, method="classic") == pytest.approx(math.sqrt(2 * math.log(1.25e5)) / 0.5)
    assert gaussian_sigma(0.5, 1e-5, method="classic") > gaussian_sigma(0.5, 1e-5)
    with pytest.raises(DPError):
        gaussian_sigma(1.0, 1e-5, method="classic")


@pytest.mark.parametrize(
    "call",
    [
        lambda: gaussian_sigma(0, 1e-5),
        lambda: gaussian_sigma(1, 1.0),
        lambda: gaussian_sigma(1, 1e-5, sensitivity=-1),
        lambda: gaussian_sigma(1, 1e-5, method="laplace"),  # type: ignore[arg-type]
        lambda: PrivacyAccountant(0, 0.1),
        lambda: PrivacyAccountant(1.0, 0),
        lambda: PrivacyAccountant(1.0, 1.5),
        lambda: PrivacyAccountant(float("nan"), 0.1),
        lambda: PrivacyAccountant(1.0, 0.1, accountant="moments"),  # type: ignore[arg-type]
        lambda: PrivacyAccountant(1.0, 0.1).step(0),
        lambda: PrivacyAccountant(1.0, 0.1).epsilon(0),
        lambda: calibrate_noise_multiplier(1.0, 1e-5, 0.01, 0),
        lambda: calibrate_noise_multiplier(-1.0, 1e-5, 0.01, 10),
    ],
)
def test_bad_parameters_raise_dp_error(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DPError) as info:
        call()
    assert isinstance(info.value, PrivacyError)


def test_classic_conversion_needs_rdp() -> None:
    acc = PrivacyAccountant(1.1, Q, accountant="pld")
    acc.step(10)
    with pytest.raises(DPError):
        acc.epsilon(DELTA, conversion="classic")
