"""Significance of an out-of-sample result, computed on its per-bar return series (issue 11).

A Sharpe ratio on its own says nothing about luck. This module puts next to it:

- a confidence interval from a **stationary block bootstrap** (Politis and Romano 1994), because per-bar
  returns are autocorrelated and an iid bootstrap would give too narrow an interval;
- the **probabilistic Sharpe ratio** (PSR, Bailey and Lopez de Prado 2012), the probability that the true
  Sharpe exceeds a benchmark Sharpe given the sample length, skewness and kurtosis;
- two **tests of the agent against a baseline on the same bars**: a paired stationary block bootstrap of the
  difference of their Sharpe ratios, and Hansen's (2005) test of superior predictive ability (SPA, from ``arch``);
- the **deflated Sharpe ratio** (DSR, Bailey and Lopez de Prado 2014) when the result is the best of several trials.

Conventions
-----------
- Inputs are per-bar simple returns (as from :func:`parallel_dqn.evaluation.portfolio.portfolio_returns`).
- The reported ``sharpe`` figures are annualised exactly like :func:`parallel_dqn.evaluation.metrics.sharpe_ratio`
  (``mean / std(ddof=1) * sqrt(bars_per_year)``, 0.0 where undefined), which this module reuses.
- PSR and DSR are computed, as in the papers, on the **per-bar (non-annualised)** Sharpe ratio, with the sample
  skewness and the **non-excess** kurtosis (3 for normal returns) of the per-bar returns (biased moment
  estimators, :func:`scipy.stats.skew` and ``scipy.stats.kurtosis(fisher=False)``). Benchmark Sharpe ratios
  and trial variances given with ``bars_per_year`` are annualised and converted to per-bar internally.
- Every result is plain Python floats, ints, lists, dicts and ``None``: straight into JSON, never NaN or inf.
  Where a figure is undefined it is ``None``: with fewer than :data:`MIN_BARS` bars (the papers' moments and the
  bootstrap rely on the central limit theorem, which Bailey and Lopez de Prado take to need 30 observations or
  more), or where the returns have zero dispersion (a constant series has no Sharpe ratio distribution).
- Every bootstrap is deterministic given ``seed``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
from arch.bootstrap import SPA, StationaryBootstrap, optimal_block_length
from scipy.stats import kurtosis as _kurtosis
from scipy.stats import norm
from scipy.stats import skew as _skew

from parallel_dqn.evaluation.metrics import sharpe_ratio

MIN_BARS = 30
"""Fewer bars than this: PSR, DSR, bootstrap intervals and p-values are ``None`` (undefined)."""

EULER_MASCHERONI = 0.5772156649015329

__all__ = [
    "EULER_MASCHERONI",
    "MIN_BARS",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "paired_sharpe_test",
    "probabilistic_sharpe_ratio",
    "psr_from_moments",
    "sharpe_confidence_interval",
    "significance",
    "spa_test",
]


# --- input checks and small helpers -----------------------------------------------------------------------

def _as_returns(returns: np.ndarray, name: str = "returns") -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"{name} contain NaN or inf")
    return r


def _as_pair(agent: np.ndarray, benchmark: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = _as_returns(agent, "agent returns")
    b = _as_returns(benchmark, "benchmark returns")
    if a.shape != b.shape:
        raise ValueError(
            f"agent and benchmark returns must cover the same bars: got {a.size} and {b.size} bars"
        )
    return a, b


def _is_constant(r: np.ndarray) -> bool:
    return r.size == 0 or bool(r.max() == r.min())


def _check_bars_per_year(bars_per_year: float) -> None:
    if not bars_per_year > 0:
        raise ValueError(f"bars_per_year must be positive, got {bars_per_year}")


def _check_bootstrap_args(n_boot: int, block: int | None, confidence: float = 0.95) -> None:
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    if block is not None and (int(block) != block or block < 1):
        raise ValueError(f"block must be None or a positive integer, got {block}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _finite(x: float | None) -> float | None:
    """``float(x)``, or ``None`` for None/NaN/inf (never lets a NaN reach JSON)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _block_length(*series: np.ndarray) -> int:
    """Politis-White (2004, corrected 2009) optimal mean block length of the stationary bootstrap.

    The largest over the non-constant series given (one block length serves a paired resample), rounded up,
    at least 1 and at most the series length. 1 (an iid bootstrap) if every series is constant.
    """
    varying = [s for s in series if s.size >= 2 and not _is_constant(s)]
    if not varying:
        return 1
    n = varying[0].size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-degenerate autocorrelations; NaN is handled below
        b = optimal_block_length(np.column_stack(varying))["stationary"].to_numpy()
    b = b[np.isfinite(b)]
    if b.size == 0:
        return 1
    return int(min(max(1, math.ceil(float(b.max()))), n))


def _moments(r: np.ndarray) -> tuple[float, float, float]:
    """Per-bar Sharpe (ddof=1), skewness and non-excess kurtosis (biased estimators)."""
    return (
        sharpe_ratio(r, 1.0),
        float(_skew(r, bias=True)),
        float(_kurtosis(r, fisher=True, bias=True)) + 3.0,
    )


def _defined(r: np.ndarray) -> bool:
    return r.size >= MIN_BARS and not _is_constant(r)


# --- probabilistic and deflated Sharpe ratio ----------------------------------------------------------------

def psr_from_moments(
    sharpe: float, n_bars: float, skewness: float = 0.0, kurtosis: float = 3.0, benchmark_sharpe: float = 0.0
) -> float:
    """Probabilistic Sharpe ratio from summary statistics (Bailey and Lopez de Prado 2012, eq. 11).

    ``Z[(SR - SR*) sqrt(n - 1) / sqrt(1 - skew SR + (kurt - 1) / 4 SR^2)]``: the probability that the true
    Sharpe ratio exceeds ``benchmark_sharpe`` given the observed ``sharpe`` over ``n_bars`` observations.
    ``sharpe`` and ``benchmark_sharpe`` are **per-period (non-annualised)**; ``kurtosis`` is **non-excess**
    (3 for normal returns). This is the form the papers' published examples are given in.

    If the variance term is not positive (only possible for degenerate moments), the answer is the limit:
    1.0 if ``sharpe > benchmark_sharpe``, 0.0 if below, 0.5 if equal.
    """
    if not n_bars > 1:
        raise ValueError(f"n_bars must be > 1, got {n_bars}")
    variance = 1.0 - skewness * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    edge = sharpe - benchmark_sharpe
    if not variance > 0.0:
        return 1.0 if edge > 0 else 0.0 if edge < 0 else 0.5
    return float(norm.cdf(edge * math.sqrt(n_bars - 1.0) / math.sqrt(variance)))


def probabilistic_sharpe_ratio(
    returns: np.ndarray, benchmark_sharpe: float = 0.0, *, bars_per_year: float | None = None
) -> float | None:
    """Probability that the true Sharpe ratio of ``returns`` exceeds ``benchmark_sharpe`` (PSR).

    Corrects the naive significance of a Sharpe ratio for sample length, skewness and fat tails.
    ``benchmark_sharpe`` is **annualised** when ``bars_per_year`` is given (converted with
    ``/ sqrt(bars_per_year)``), otherwise per-bar. The benchmark is taken as a known constant: for a benchmark
    that is itself estimated on the same bars (buy-and-hold), :func:`paired_sharpe_test` is the proper test.

    ``None`` with fewer than :data:`MIN_BARS` bars or constant returns.
    """
    r = _as_returns(returns)
    if not _defined(r):
        return None
    benchmark = float(benchmark_sharpe)
    if bars_per_year is not None:
        _check_bars_per_year(bars_per_year)
        benchmark /= math.sqrt(bars_per_year)
    sr, skewness, kurt = _moments(r)
    return _finite(psr_from_moments(sr, r.size, skewness, kurt, benchmark))


def expected_max_sharpe(n_trials: float, variance: float) -> float:
    """Expected maximum of ``n_trials`` Sharpe ratios whose true value is 0 (Bailey and Lopez de Prado 2014, eq. 1).

    ``sqrt(variance) ((1 - g) Z^-1[1 - 1/N] + g Z^-1[1 - 1/(N e)])`` with ``g`` the Euler-Mascheroni constant:
    the Sharpe ratio the best of N skill-less trials reaches by luck alone, in the units of ``sqrt(variance)``
    (``variance`` is the variance of the trials' Sharpe ratios). An approximation for large N (within about 2%
    from N = 5). 0.0 for a single trial. ``n_trials`` may be fractional (an effective number of independent trials).
    """
    if not n_trials >= 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if not variance >= 0 or not math.isfinite(variance):
        raise ValueError(f"variance must be finite and >= 0, got {variance}")
    if n_trials == 1 or variance == 0:
        return 0.0
    g = EULER_MASCHERONI
    z = (1.0 - g) * norm.ppf(1.0 - 1.0 / n_trials) + g * norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(variance) * z)


def deflated_sharpe_ratio(
    returns: np.ndarray, n_trials: float, trials_sharpe_variance: float, *, bars_per_year: float | None = None
) -> float | None:
    """Deflated Sharpe ratio (Bailey and Lopez de Prado 2014, eq. 2): PSR against the best-of-N-by-luck Sharpe.

    When ``returns`` is the best of ``n_trials`` (independent) trials, its Sharpe is biased upwards; the DSR is
    the probability that its true Sharpe exceeds :func:`expected_max_sharpe` of N skill-less trials whose Sharpe
    ratios have variance ``trials_sharpe_variance``. That variance is of **annualised** Sharpe ratios when
    ``bars_per_year`` is given (divided by ``bars_per_year`` internally), otherwise of per-bar ones.
    With one trial the DSR is the PSR against 0. ``None`` with fewer than :data:`MIN_BARS` bars or constant returns.
    """
    r = _as_returns(returns)
    variance = float(trials_sharpe_variance)
    if bars_per_year is not None:
        _check_bars_per_year(bars_per_year)
        variance /= bars_per_year
    threshold = expected_max_sharpe(n_trials, variance)  # validates both arguments before the early return
    if not _defined(r):
        return None
    sr, skewness, kurt = _moments(r)
    return _finite(psr_from_moments(sr, r.size, skewness, kurt, threshold))


# --- bootstrap ---------------------------------------------------------------------------------------------

def sharpe_confidence_interval(
    returns: np.ndarray,
    bars_per_year: float,
    *,
    confidence: float = 0.95,
    n_boot: int = 1000,
    block: int | None = None,
    seed: int = 0,
) -> dict:
    """Percentile confidence interval of the annualised Sharpe ratio from a stationary block bootstrap.

    The stationary bootstrap (Politis and Romano 1994) resamples blocks of geometric length with mean ``block``,
    which keeps the returns' autocorrelation and so gives an honest (wider) interval where an iid bootstrap
    (``block=1``) would be too narrow. ``block=None`` takes the Politis-White optimal block length (at least 1).

    Returns ``{"low", "high", "block", "n_boot", "confidence"}``; ``low``, ``high`` and ``block`` are ``None``
    with fewer than :data:`MIN_BARS` bars or constant returns.
    """
    _check_bars_per_year(bars_per_year)
    _check_bootstrap_args(n_boot, block, confidence)
    r = _as_returns(returns)
    out = {"low": None, "high": None, "block": None, "n_boot": int(n_boot), "confidence": float(confidence)}
    if not _defined(r):
        return out
    b = int(block) if block is not None else _block_length(r)
    bs = StationaryBootstrap(b, r, seed=seed)
    draws = bs.apply(lambda x: np.array([sharpe_ratio(x, bars_per_year)]), reps=int(n_boot))[:, 0]
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    out.update(low=_finite(low), high=_finite(high), block=b)
    return out


def paired_sharpe_test(
    agent: np.ndarray,
    benchmark: np.ndarray,
    bars_per_year: float,
    *,
    n_boot: int = 1000,
    block: int | None = None,
    seed: int = 0,
) -> dict:
    """Is the agent's Sharpe ratio above the benchmark's on the same bars? A paired stationary block bootstrap.

    Both series are resampled with the same blocks, so their correlation (same market, same bars) is kept.
    ``sharpe_difference`` is the annualised ``SR(agent) - SR(benchmark)``. ``p_value`` is one-sided for the null
    "the agent's Sharpe is not above the benchmark's": the share of bootstrap differences, centred on the observed
    one, that reach the observed difference, ``(1 + #{d* - d >= d}) / (n_boot + 1)`` (the bootstrap is centred so
    that it describes the null; Ledoit and Wolf 2008 use the same approach). ``ci`` is the 95% percentile interval
    of the difference. ``block=None``: the larger Politis-White block length of the two series.

    Raises ValueError if the two series differ in length. With fewer than :data:`MIN_BARS` bars the difference is
    still given but ``p_value``, ``ci`` and ``block`` are ``None``. Identical series give difference 0 and p 1.
    """
    _check_bars_per_year(bars_per_year)
    _check_bootstrap_args(n_boot, block)
    a, b = _as_pair(agent, benchmark)
    diff = sharpe_ratio(a, bars_per_year) - sharpe_ratio(b, bars_per_year)
    out = {"sharpe_difference": _finite(diff), "p_value": None, "ci": [None, None], "block": None}
    if a.size < MIN_BARS:
        return out
    blk = int(block) if block is not None else _block_length(a, b)
    bs = StationaryBootstrap(blk, a, b, seed=seed)
    draws = bs.apply(
        lambda x, y: np.array([sharpe_ratio(x, bars_per_year) - sharpe_ratio(y, bars_per_year)]), reps=int(n_boot)
    )[:, 0]
    # The tolerance keeps floating-point noise from deciding ties (identical series: every d* - d is 0).
    tol = 1e-12 * max(1.0, abs(diff))
    p = (1.0 + np.count_nonzero(draws - diff >= diff - tol)) / (n_boot + 1.0)
    low, high = np.percentile(draws, [2.5, 97.5])
    out.update(p_value=_finite(p), ci=[_finite(low), _finite(high)], block=blk)
    return out


def spa_test(
    agent: np.ndarray, benchmark: np.ndarray, *, n_boot: int = 1000, block: int | None = None, seed: int = 0
) -> dict:
    """Hansen's (2005) test of superior predictive ability of the agent over the benchmark (``arch.bootstrap.SPA``).

    Losses are negative returns: the benchmark's losses ``-benchmark``, the one model's ``-agent``. The null is
    that the agent's expected per-bar return is not above the benchmark's (this compares mean returns, not
    risk-adjusted ones); a small p-value means the agent does better. Returns ``{"lower", "consistent", "upper",
    "block"}``: Hansen's three p-values (``consistent`` is the one to quote; lower and upper bound it) and the
    stationary-bootstrap block length (``None``: Politis-White on the per-bar return difference). arch's statistic
    is the mean loss difference itself, not floored at 0, so a clearly worse agent gets lower and consistent
    p-values near 0.5 (and upper near 1), not 1: large either way.

    A constant difference cannot be studentised; it gives p-values 1.0 if the agent never does better (identical
    series included), 0.0 if it does better on every bar. All ``None`` with fewer than :data:`MIN_BARS` bars.
    Raises ValueError if the two series differ in length.
    """
    _check_bootstrap_args(n_boot, block)
    a, b = _as_pair(agent, benchmark)
    out = {"lower": None, "consistent": None, "upper": None, "block": None}
    if a.size < MIN_BARS:
        return out
    d = a - b
    if _is_constant(d):
        p = 0.0 if d[0] > 0 else 1.0
        out.update(lower=p, consistent=p, upper=p, block=int(block) if block is not None else 1)
        return out
    blk = int(block) if block is not None else _block_length(d)
    spa = SPA(-b, -a, block_size=blk, reps=int(n_boot), bootstrap="stationary", seed=seed)
    spa.compute()
    pv = spa.pvalues
    out.update(
        lower=_finite(pv["lower"]), consistent=_finite(pv["consistent"]), upper=_finite(pv["upper"]), block=blk
    )
    return out


# --- everything together -------------------------------------------------------------------------------------

def _compare(agent: np.ndarray, base: np.ndarray, bars_per_year: float, n_boot: int, seed: int) -> dict:
    result = {"benchmark_sharpe": _finite(sharpe_ratio(base, bars_per_year))}
    result.update(paired_sharpe_test(agent, base, bars_per_year, n_boot=n_boot, seed=seed))
    result["spa"] = spa_test(agent, base, n_boot=n_boot, seed=seed)
    return result


def significance(
    agent: np.ndarray,
    baselines: Mapping[str, np.ndarray],
    bars_per_year: float,
    *,
    n_trials: float = 1,
    trials_sharpe_variance: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Every significance figure of an out-of-sample result in one JSON-ready dict.

    ``agent`` and every series in ``baselines`` are per-bar returns on the same bars (same length; ValueError
    otherwise). ``baselines`` must contain ``"buy_and_hold"`` (ValueError otherwise). Keys:

    - ``n_bars``, ``bars_per_year``, ``min_bars`` (:data:`MIN_BARS`);
    - ``sharpe`` (annualised, as in metrics), ``sharpe_per_bar``, ``skewness``, ``kurtosis`` (non-excess);
    - ``sharpe_ci``: :func:`sharpe_confidence_interval`;
    - ``psr_vs_zero`` and ``psr_vs_buy_and_hold`` (:func:`probabilistic_sharpe_ratio` against 0 and against
      buy-and-hold's annualised Sharpe, taken as known);
    - ``vs_buy_and_hold``: ``{"benchmark_sharpe", "sharpe_difference", "p_value", "ci", "block", "spa": {...}}``
      (:func:`paired_sharpe_test` and :func:`spa_test`);
    - ``vs_baselines``: the same comparison against every other baseline, by name. Their p-values are per
      comparison, not adjusted for the number of baselines;
    - ``n_trials``; and when ``n_trials > 1``: ``deflated_sharpe`` (:func:`deflated_sharpe_ratio`),
      ``expected_max_sharpe`` (annualised) and ``trials_sharpe_variance``, the variance of the trials'
      **annualised** Sharpe ratios, which is then required (ValueError if missing).

    Undefined figures are ``None`` (see the module docstring); nothing is NaN. Deterministic given ``seed``.
    """
    _check_bars_per_year(bars_per_year)
    a = _as_returns(agent, "agent returns")
    if "buy_and_hold" not in baselines:
        raise ValueError(f"baselines must contain 'buy_and_hold', got {sorted(baselines)}")
    bases = {name: _as_pair(a, series)[1] for name, series in baselines.items()}
    if not n_trials >= 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if n_trials > 1 and trials_sharpe_variance is None:
        raise ValueError("n_trials > 1 needs trials_sharpe_variance (the variance of the trials' annualised Sharpes)")

    defined = _defined(a)
    sr_bar, skewness, kurt = _moments(a) if defined else (sharpe_ratio(a, 1.0), None, None)
    bh = bases["buy_and_hold"]
    bh_sharpe = sharpe_ratio(bh, bars_per_year)
    out: dict = {
        "n_bars": int(a.size),
        "bars_per_year": float(bars_per_year),
        "min_bars": MIN_BARS,
        "sharpe": _finite(sharpe_ratio(a, bars_per_year)),
        "sharpe_per_bar": _finite(sr_bar),
        "skewness": _finite(skewness),
        "kurtosis": _finite(kurt),
        "sharpe_ci": sharpe_confidence_interval(a, bars_per_year, n_boot=n_boot, seed=seed),
        "psr_vs_zero": probabilistic_sharpe_ratio(a, 0.0),
        "psr_vs_buy_and_hold": probabilistic_sharpe_ratio(a, bh_sharpe, bars_per_year=bars_per_year),
        "vs_buy_and_hold": _compare(a, bh, bars_per_year, n_boot, seed),
        "vs_baselines": {
            name: _compare(a, series, bars_per_year, n_boot, seed)
            for name, series in bases.items()
            if name != "buy_and_hold"
        },
        "n_trials": int(n_trials) if float(n_trials).is_integer() else float(n_trials),
    }
    if n_trials > 1:
        out["trials_sharpe_variance"] = _finite(trials_sharpe_variance)
        out["expected_max_sharpe"] = _finite(
            expected_max_sharpe(n_trials, trials_sharpe_variance / bars_per_year) * math.sqrt(bars_per_year)
        )
        out["deflated_sharpe"] = deflated_sharpe_ratio(
            a, n_trials, trials_sharpe_variance, bars_per_year=bars_per_year
        )
    return out
