"""Market regimes: a causal, online detector over market-wide volatility, trend and cross-stock correlation.

Per bar ``t`` the detector's inputs are trailing statistics of the market (windows of ``window`` bars ending
at ``t``, nothing after it): the log of the volatility of the cross-stock mean return, its trend (the window's
summed mean return over its volatility, a t-statistic) and, with more than one stock, the stocks' average
pairwise correlation. A Gaussian HMM (hmmlearn's ``GaussianHMM``, diagonal covariances) is fitted by EM on the
training rows' inputs only; its states are sorted by their mean volatility, so state 0 is the calmest.

The probabilities used anywhere are **filtered**: ``p(state_t | x_1..x_t)`` from :func:`filtered` (our own
forward recursion over the fitted parameters). hmmlearn's ``predict_proba`` is smoothed (forward-backward: it
uses bars after ``t``) and is never used. The recursion restarts from the start probabilities at each
``restarts`` row (the evaluation period's first bar), so an evaluation of a saved model gives the run's figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from parallel_dqn.errors import UserError

INPUT_NAMES = ("log_vol", "trend", "correlation")
MIN_FIT_ROWS = 50  # training rows per state below which EM has nothing to fit


def regime_inputs(log_returns: np.ndarray, window: int) -> np.ndarray:
    """Market-wide inputs ``[T, D]`` (D = 3, or 2 for a single stock: no correlation), each from bars <= t.

    NaN where a window holds fewer than two bars (the first bar); :meth:`RegimeModel.standardise` fills them.
    """
    r = np.asarray(log_returns, dtype=np.float64)
    frame = pd.DataFrame(r)
    market = pd.Series(r.mean(axis=1))
    roll = market.rolling(window, min_periods=2)
    vol = roll.std().to_numpy()
    n = market.rolling(window, min_periods=2).count().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        log_vol = np.log(np.maximum(vol, 1e-12))
        trend = roll.sum().to_numpy() / (vol * np.sqrt(n))
    columns = [log_vol, np.where(vol > 0, trend, 0.0)]
    if r.shape[1] > 1:
        # average pairwise correlation: sum of the off-diagonal covariances over the sum of the products of the
        # standard deviations, both from the trailing variances of each stock and of the stocks' sum
        var_each = frame.rolling(window, min_periods=2).var().to_numpy()
        var_sum = pd.Series(r.sum(axis=1)).rolling(window, min_periods=2).var().to_numpy()
        sd = np.sqrt(np.maximum(var_each, 0.0))
        off_cov = var_sum - var_each.sum(axis=1)
        off_sd = sd.sum(axis=1) ** 2 - (sd**2).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            columns.append(np.where(off_sd > 0, off_cov / off_sd, 0.0))
    return np.stack(columns, axis=1)


@dataclass(frozen=True)
class RegimeModel:
    """A fitted Gaussian HMM over standardised regime inputs; states sorted by volatility (0 = calm)."""

    window: int
    mean: np.ndarray  # [D] training-row mean of each input (standardisation)
    std: np.ndarray  # [D]
    startprob: np.ndarray  # [K]
    transmat: np.ndarray  # [K, K]
    means: np.ndarray  # [K, D] per state, in standardised units
    variances: np.ndarray  # [K, D] diagonal covariances

    @property
    def states(self) -> int:
        return len(self.startprob)

    @classmethod
    def fit(cls, inputs: np.ndarray, train_rows: tuple[int, int], states: int, window: int, seed: int) -> RegimeModel:
        """EM (hmmlearn) on the inputs of clock rows ``[train_rows)`` only."""
        from hmmlearn.hmm import GaussianHMM  # imported here: only runs with regimes pay for scikit-learn's import

        x = inputs[slice(*train_rows)]
        ok = np.isfinite(x).all(axis=1)
        if ok.sum() < MIN_FIT_ROWS * states:
            raise UserError(
                f"the regime detector needs at least {MIN_FIT_ROWS * states} training bars for {states} states, "
                f"the training period has {int(ok.sum())}", "use a longer training period or fewer regime.states")
        mean, std = x[ok].mean(axis=0), x[ok].std(axis=0)
        std = np.where(std > 0, std, 1.0)
        z = (x[ok] - mean) / std
        hmm = GaussianHMM(n_components=states, covariance_type="diag", n_iter=100, tol=1e-4, random_state=seed)
        hmm.fit(z)
        order = np.argsort(hmm.means_[:, 0], kind="stable")  # by volatility: state 0 is the calmest
        variances = np.stack([np.diag(c) for c in hmm.covars_])[order]
        return cls(window, mean, std, hmm.startprob_[order], hmm.transmat_[np.ix_(order, order)], hmm.means_[order],
                   variances)

    def standardise(self, inputs: np.ndarray) -> np.ndarray:
        """Inputs in the training rows' units; a value not defined yet (the first bar) is the training mean."""
        z = (inputs - self.mean) / self.std
        return np.where(np.isfinite(z), z, 0.0)

    def filtered(self, inputs: np.ndarray, restarts: tuple[int, ...] = ()) -> np.ndarray:
        """Filtered probabilities ``[T, K]``: row t is ``p(state_t | x_0..x_t)`` (the forward recursion), started
        afresh from :attr:`startprob` at row 0 and at every row in ``restarts``."""
        z = self.standardise(inputs)
        log_b = -0.5 * (((z[:, None, :] - self.means[None]) ** 2) / self.variances[None]
                        + np.log(2 * np.pi * self.variances[None])).sum(axis=2)  # [T, K] log emission densities
        b = np.exp(log_b - log_b.max(axis=1, keepdims=True))  # per-row scale: cancels in the normalisation
        out = np.empty_like(b)
        fresh = set(int(r) for r in restarts)
        p = self.startprob
        for t in range(len(b)):
            prior = self.startprob if t == 0 or t in fresh else p @ self.transmat
            post = prior * b[t]
            total = post.sum()
            p = post / total if total > 0 else prior
            out[t] = p
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (a model file, a set-up message, a checkpoint)."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegimeModel:
        return cls(int(d["window"]), *(np.asarray(d[k], dtype=np.float64) for k in
                                       ("mean", "std", "startprob", "transmat", "means", "variances")))


@dataclass(frozen=True)
class RegimePath:
    """The detector's output over the clock: filtered probabilities and the most likely state per bar."""

    probs: np.ndarray  # float32 [T, K]
    labels: np.ndarray  # int64 [T], argmax of probs (ties to the calmer state)

    @classmethod
    def of(cls, probs: np.ndarray) -> RegimePath:
        p = np.asarray(probs, dtype=np.float32)
        return cls(p, p.argmax(axis=1).astype(np.int64))

    def scale(self, table: list[float], t: int) -> float:
        """The entry of a per-regime ``table`` for the most likely regime at bar ``t``."""
        return float(table[int(self.labels[t])])


def detect(
    log_returns: np.ndarray, train_rows: tuple[int, int], restarts: tuple[int, ...], states: int, window: int,
    seed: int, model: RegimeModel | None = None,
) -> tuple[RegimeModel, RegimePath]:
    """Fit the detector on the training rows (or take ``model``, a saved one) and filter the whole clock."""
    inputs = regime_inputs(log_returns, window)
    if model is None:
        model = RegimeModel.fit(inputs, train_rows, states, window, seed)
    return model, RegimePath.of(model.filtered(inputs, restarts))


def with_regime_features(features: np.ndarray, path: RegimePath) -> np.ndarray:
    """``features [T, S, F]`` with the K regime probabilities appended to every stock's row (float32)."""
    T, S, F = features.shape
    K = path.probs.shape[1]
    out = np.empty((T, S, F + K), dtype=np.float32)
    out[:, :, :F] = features
    out[:, :, F:] = path.probs[:, None, :]
    return out
