"""Differential-privacy calibration and accounting, on Google's ``dp_accounting``.

Nothing here re-implements an accountant: the Gaussian calibration is
``dp_accounting.get_sigma_gaussian`` (Balle & Wang 2018, the analytic Gaussian
mechanism) and DP-SGD accounting composes ``PoissonSampledDpEvent(q,
GaussianDpEvent(noise_multiplier))`` in ``dp_accounting``'s RDP (default) or
PLD accountant.

The guarantee is about neighbouring datasets that differ by adding or
removing one *record*; inside a brand's DP-SGD one record is one member, so
that is member-level protection.  :class:`PrivacySpend` says which unit a
figure refers to so a model release record cannot overstate it.

RDP to (epsilon, delta) conversion: ``dp_accounting`` uses the improved bound
of Canonne, Kamath & Steinke (2020, Prop. 12), which is tighter than the
classic ``rdp - log(delta)/(alpha - 1)`` of Mironov (2017) that older
published tables (TensorFlow Privacy's MNIST tutorial) were computed with.
``epsilon(delta, conversion="classic")`` reproduces those tables exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import dp_accounting
import numpy as np
from dp_accounting import pld, rdp

from privacy.errors import DPError

__all__ = [
    "PrivacyAccountant",
    "PrivacySpend",
    "calibrate_noise_multiplier",
    "dpsgd_epsilon",
    "gaussian_sigma",
    "geometric_noise",
]

AccountantKind = Literal["rdp", "pld"]
Conversion = Literal["improved", "classic"]
_MECHANISM = "poisson_subsampled_gaussian"


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise DPError(f"{name} must be a positive finite number")
    return float(value)


def _delta(delta: float) -> float:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise DPError("delta must be in (0, 1)")
    return float(delta)


def _rate(sample_rate: float) -> float:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or not 0 < sample_rate <= 1:
        raise DPError("sample_rate must be in (0, 1]")
    return float(sample_rate)


def gaussian_sigma(
    epsilon: float,
    delta: float,
    sensitivity: float = 1.0,
    *,
    method: Literal["analytic", "classic"] = "analytic",
) -> float:
    """Noise standard deviation for an (epsilon, delta)-DP Gaussian mechanism with L2 ``sensitivity``.

    ``"analytic"`` is the smallest sigma that achieves the guarantee (Balle &
    Wang 2018, via ``dp_accounting``); ``"classic"`` is Dwork & Roth's
    ``sensitivity * sqrt(2 ln(1.25/delta)) / epsilon``, valid only for epsilon < 1
    and always larger.
    """
    eps = _positive("epsilon", epsilon)
    d = _delta(delta)
    sens = _positive("sensitivity", sensitivity)
    if method == "classic":
        if eps >= 1:
            raise DPError("the classic Gaussian bound holds only for epsilon < 1; use method='analytic'")
        return sens * math.sqrt(2 * math.log(1.25 / d)) / eps
    if method != "analytic":
        raise DPError(f"unknown method {method!r}; expected 'analytic' or 'classic'")
    return sens * float(dp_accounting.get_sigma_gaussian(eps, d))


def _dpsgd_event(noise_multiplier: float, sample_rate: float) -> dp_accounting.DpEvent:
    return dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier))


Run = tuple[float, float, int]  # one DP-SGD run: (noise multiplier, sample rate, steps)


def _composed(runs: list[Run] | tuple[Run, ...]) -> dp_accounting.DpEvent:
    return dp_accounting.ComposedDpEvent([dp_accounting.SelfComposedDpEvent(_dpsgd_event(nm, q), n) for nm, q, n in runs])


def _new_accountant(kind: str) -> dp_accounting.PrivacyAccountant:
    if kind == "rdp":
        return rdp.RdpAccountant()
    if kind == "pld":
        return pld.PLDAccountant()
    raise DPError(f"unknown accountant {kind!r}; expected 'rdp' or 'pld'")


@dataclass(frozen=True, slots=True)
class PrivacySpend:
    """Privacy spent by a training run, in a form that goes into a model release record."""

    epsilon: float
    delta: float
    mechanism: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    accountant: str
    unit: str = "record"

    def to_dict(self) -> dict[str, float | int | str]:
        """JSON-ready form."""
        return asdict(self)


class PrivacyAccountant:
    """Tracks (epsilon, delta) of DP-SGD: Poisson sampling at ``sample_rate``, Gaussian noise.

    Call :meth:`step` once per optimiser step (or ``step(n)`` per epoch);
    :meth:`epsilon` is cheap to ask at any time.  ``unit`` names what one
    dataset record is (``"record"``, or ``"member"`` for per-member clipping,
    ``"brand"`` for client-level DP) and is copied into :class:`PrivacySpend`.
    """

    def __init__(
        self,
        noise_multiplier: float,
        sample_rate: float,
        *,
        accountant: AccountantKind = "rdp",
        unit: str = "record",
    ) -> None:
        self.noise_multiplier = _positive("noise_multiplier", noise_multiplier)
        self.sample_rate = _rate(sample_rate)
        self.kind = accountant
        self.unit = unit
        self._accountant = _new_accountant(accountant)
        self._event = _dpsgd_event(self.noise_multiplier, self.sample_rate)
        self._steps = 0
        # Composing costs ~0.1 s whatever the count (RDP of every order), so
        # steps are batched up and composed once, when epsilon is asked for.
        self._pending = 0

    @property
    def steps(self) -> int:
        """Steps recorded so far."""
        return self._steps

    def step(self, n: int = 1) -> None:
        """Record ``n`` more noisy steps."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DPError("n must be a positive integer")
        self._pending += n
        self._steps += n

    def _flush(self) -> None:
        if self._pending:
            self._accountant.compose(self._event, self._pending)
            self._pending = 0

    def epsilon(self, delta: float, *, conversion: Conversion = "improved") -> float:
        """Epsilon spent so far at ``delta``.

        ``conversion="classic"`` (RDP only) uses Mironov's original RDP-to-DP
        bound, to compare with tables published before the improved bound.
        """
        d = _delta(delta)
        if self._steps == 0:
            return 0.0
        self._flush()
        if conversion == "improved":
            return float(self._accountant.get_epsilon(d))
        if conversion != "classic":
            raise DPError(f"unknown conversion {conversion!r}")
        if not isinstance(self._accountant, rdp.RdpAccountant):
            raise DPError("the classic conversion applies to the RDP accountant only")
        orders = np.asarray(self._accountant.orders, dtype=float)
        values = np.asarray(self._accountant.rdp, dtype=float)
        return float(max(0.0, np.min(values - math.log(d) / (orders - 1))))

    def spent(self, delta: float) -> PrivacySpend:
        """A :class:`PrivacySpend` record for the steps so far."""
        return PrivacySpend(
            epsilon=self.epsilon(delta),
            delta=_delta(delta),
            mechanism=_MECHANISM,
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=self._steps,
            accountant=f"dp_accounting.{self.kind}",
            unit=self.unit,
        )

    def __repr__(self) -> str:
        return (
            f"PrivacyAccountant(noise_multiplier={self.noise_multiplier}, sample_rate={self.sample_rate}, "
            f"steps={self._steps}, accountant={self.kind!r})"
        )


def dpsgd_epsilon(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    *,
    accountant: AccountantKind = "rdp",
    conversion: Conversion = "improved",
    after: tuple[Run, ...] = (),
) -> float:
    """Epsilon of ``steps`` DP-SGD steps (one-shot form of :class:`PrivacyAccountant`).

    ``after``: earlier DP-SGD runs on the same records, ``(noise_multiplier, sample_rate, steps)``
    each; the result is the epsilon of all of them composed (RDP accountant)."""
    if after:
        accountant_ = rdp.RdpAccountant()
        accountant_.compose(_composed([*after, (noise_multiplier, sample_rate, steps)]))
        return float(accountant_.get_epsilon(_delta(delta)))
    acc = PrivacyAccountant(noise_multiplier, sample_rate, accountant=accountant)
    acc.step(steps)
    return acc.epsilon(delta, conversion=conversion)



def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    *,
    tol: float = 1e-4,
    after: tuple[Run, ...] = (),
) -> float:
    """Smallest noise multiplier whose DP-SGD run of ``steps`` stays within ``target_epsilon`` at ``delta``
    (composed with the earlier runs ``after`` on the same records, when given).

    Uses ``dp_accounting.calibrate_dp_mechanism`` (a bracketed root search)
    over the RDP accountant, then rounds up to the tolerance grid and checks
    the result, so the returned value never overshoots the budget.
    """
    eps = _positive("target_epsilon", target_epsilon)
    d = _delta(delta)
    q = _rate(sample_rate)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise DPError("steps must be a positive integer")
    tol = _positive("tol", tol)

    def make_event(nm: float) -> dp_accounting.DpEvent:
        if after:
            return _composed([*after, (nm, q, steps)])
        return dp_accounting.SelfComposedDpEvent(_dpsgd_event(nm, q), steps)

    try:
        nm = float(
            dp_accounting.calibrate_dp_mechanism(
                rdp.RdpAccountant,
                make_event,
                eps,
                d,
                bracket_interval=dp_accounting.LowerEndpointAndGuess(lower_endpoint=tol, initial_guess=1.0),
                tol=tol / 2,
            )
        )
    except dp_accounting.mechanism_calibration.NoBracketIntervalFoundError:
        raise DPError("no noise multiplier reaches that epsilon; the budget is too small") from None
    # Round up onto the tolerance grid, and step up if rounding landed short.
    nm = round(math.ceil(nm / tol) * tol, 12)
    while dpsgd_epsilon(nm, q, steps, d, after=after) > eps:
        nm = round(nm + tol, 12)
    return nm


def geometric_noise(epsilon: float, sensitivity: int = 1) -> int:
    """Integer noise of the geometric mechanism (two-sided geometric, the discrete Laplace of
    Ghosh, Roughgarden & Sundararajan 2009): P(k) ∝ exp(-epsilon |k| / sensitivity). Added to a count
    of sensitivity 1 it gives pure epsilon-DP; drawn from the operating system's CSPRNG."""
    import secrets

    _positive("epsilon", epsilon)
    q = math.exp(-epsilon / sensitivity)  # the chance of one more step away from zero

    def failures() -> int:  # a geometric count of failures before the first success (1 - q)
        u = (secrets.randbits(53) + 1) / 2.0**53  # in (0, 1]
        return int(math.floor(math.log(u) / math.log(q)))

    return failures() - failures()
