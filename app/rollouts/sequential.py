"""Always-valid inference for acceptance rates: the mixture sequential probability ratio test (mSPRT) of Johari,
Pekelis and Walsh, "Always valid inference: continuous monitoring of A/B tests" (Operations Research, 2022).

The difference d = candidate - control of two acceptance rates is, to a normal approximation, a Brownian motion in
its information I = 1/V (V its variance): the score S = d/V has independent increments with variance I. For any
true difference t, exp(t*S - t*t*I/2) is then a martingale of mean 1 under d = t; mixing it over t with a normal
prior N(0, tau^2) gives the likelihood ratio

    L = sqrt(V / (V + tau^2)) * exp(d^2 tau^2 / (2 V (V + tau^2)))

still a mean-1 martingale under "no difference", so by Ville's inequality P(L ever reaches 1/alpha) <= alpha
however often it is looked at. Rejecting when it does is valid under continuous peeking, 1/L (kept as a running
minimum) is an always-valid p-value, and the d0 that L(d - d0) does not reject form an always-valid interval.

`compare` tests one-sidedly "the candidate is at least as good": the prior is the half-normal on t < 0, whose
mixture is L * 2 * Phi(-S / sqrt(1/V + 1/tau^2)), a mean-1 martingale at t = 0 and a supermartingale for every
t > 0, so the composite null keeps its level alpha.

Rollout steps change the share of traffic, and with it the weight of each arm in d; the acceptance rate may also
drift between steps. So each step is a stratum: its own difference with its own variance, pooled with weights 1/V_k
(S = sum d_k/V_k, I = sum 1/V_k), which keeps S a sum of independent increments across a change of step and lets
a change in the base rate between steps cancel out.

Assumptions: impressions are independent Bernoulli trials (a session's impressions are not, quite: many
impressions from few users widen the real variance), and the normal approximation, which is why a stratum counts
only once both of its arms have a few impressions (`MIN_STRATUM`)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MIN_STRATUM = 10  # impressions per arm before a step's figures count


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class Comparison:
    """The candidate against the control, over every step so far."""
    difference: float  # candidate - control, pooled over steps; 0 with no data
    variance: float  # of `difference`; inf with no data
    interval: Interval  # always-valid (1 - alpha) interval for the difference (unpooled variances)
    p_worse: float  # always-valid p-value of "the candidate is at least as good as the control"
    p_differ: float  # always-valid p-value of "no difference", two-sided
    worse: bool  # p_worse <= alpha: the candidate is worse at 1 - alpha confidence
    control_impressions: int
    candidate_impressions: int


def half_width(variance: float, alpha: float, tau: float) -> float:
    """Half the always-valid interval's width for an estimate of this variance (the mixture's boundary)."""
    if variance <= 0:
        return 0.0
    if math.isinf(variance):
        return math.inf
    t2 = tau * tau
    return math.sqrt(variance * (variance + t2) / t2 * (2 * math.log(1 / alpha) + math.log((variance + t2) / variance)))


def log_mixture_ratio(estimate: float, variance: float, tau: float) -> float:
    """log L for an estimate of the difference against 0, two-sided (the normal mixture)."""
    t2 = tau * tau
    return 0.5 * math.log(variance / (variance + t2)) + estimate * estimate * t2 / (2 * variance * (variance + t2))


def log_mixture_ratio_below(estimate: float, variance: float, tau: float) -> float:
    """log L against "the difference is >= 0" (the half-normal mixture on differences below 0)."""
    a = 1 / variance + 1 / (tau * tau)
    score = estimate / variance
    return math.log(2) + log_mixture_ratio(estimate, variance, tau) + _log_phi(-score / math.sqrt(a))


def _log_phi(x: float) -> float:
    """log of the standard normal CDF, without underflow far in the lower tail."""
    p = 0.5 * math.erfc(-x / math.sqrt(2))
    if p > 1e-300:
        return math.log(p)
    return -x * x / 2 - math.log(-x) - 0.5 * math.log(2 * math.pi)  # Mills' ratio, x < -37


def _p_value(log_ratio: float) -> float:
    return 1.0 if log_ratio <= 0 else math.exp(-log_ratio)


def proportion_interval(successes: int, trials: int, alpha: float, tau: float) -> Interval:
    """An always-valid interval for one arm's rate (the same mixture about the rate itself), clipped to [0, 1]."""
    if trials <= 0:
        return Interval(0.0, 1.0)
    rate = successes / trials
    smoothed = (successes + 1) / (trials + 2)
    h = half_width(smoothed * (1 - smoothed) / trials, alpha, tau)
    return Interval(max(0.0, rate - h), min(1.0, rate + h))


def compare(strata: Sequence[tuple[int, int, int, int]], alpha: float, tau: float) -> Comparison:
    """The mSPRT over steps; each stratum is (control impressions, control successes, candidate impressions,
    candidate successes) of one step.

    The test uses each step's pooled variance (the one "no difference" implies, steady at small counts), the
    interval each arm's own variance with one success and one failure added (never 0)."""
    score = information = 0.0  # under the pooled variances: the test
    u_score = u_information = 0.0  # under the unpooled variances: the interval
    n_control = n_candidate = 0
    for nt, xt, nc, xc in strata:
        if min(nt, nc) < MIN_STRATUM:
            continue
        n_control += nt
        n_candidate += nc
        d = xc / nc - xt / nt
        pooled = (xc + xt) / (nc + nt)
        v = pooled * (1 - pooled) * (1 / nc + 1 / nt)
        if v > 0:  # a step where every impression or none was accepted says nothing about a difference
            score += d / v
            information += 1 / v
        st, sc = (xt + 1) / (nt + 2), (xc + 1) / (nc + 2)
        u = st * (1 - st) / nt + sc * (1 - sc) / nc
        u_score += d / u
        u_information += 1 / u
    if information == 0:
        p_worse = p_differ = 1.0
        difference, variance = 0.0, math.inf
    else:
        difference, variance = score / information, 1 / information
        p_worse = _p_value(log_mixture_ratio_below(difference, variance, tau))
        p_differ = _p_value(log_mixture_ratio(difference, variance, tau))
    if u_information == 0:
        interval = Interval(-1.0, 1.0)
    else:
        centre, h = u_score / u_information, half_width(1 / u_information, alpha, tau)
        interval = Interval(max(-1.0, centre - h), min(1.0, centre + h))
    return Comparison(difference, variance, interval, p_worse, p_differ, p_worse <= alpha, n_control, n_candidate)
