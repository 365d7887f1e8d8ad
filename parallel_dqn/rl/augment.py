"""Training-only augmentation of replayed samples (``[augment]``): noise, feature dropout, time warp, scenarios.

A worker's learning step asks :class:`Augmenter` to change the windows it embeds for a batch, never acting,
validation or evaluation. The batch's windows come in two halves, the samples' states ``s`` (at ``t``) and next
states ``s'`` (at ``next_t``); one draw per *unit* (a sample, or a sampled bar when learning embeds every stock's
window once per bar) is applied to both halves alike, so the online pass at ``s``, and the online and target
passes at ``s'``, see one augmented world, and a volatility scenario rescales the sample's reward with it.

Each transform reads only the rows of the window it changes, the rows ``t - W + 1 .. t`` (``next_t``'s for
``s'``), and the training period's statistics (:class:`FeatureScales`): no bar after the decision time, and no
bar of the evaluation period, reaches an augmented sample. In the order applied:

* time warp (``time_warp``: probability per unit): the W rows resampled at a monotone random warp of the time
  grid that keeps the window's first and last rows (linear interpolation between neighbouring rows);
* scenario (``scenarios``: share of units): the return-scale features (:data:`RETURN_SCALE`) as if every raw
  return were ``c`` times larger, ``c`` log-uniform in ``[1/2, 2]``, and the reward multiplied by ``c``;
* noise (``noise``): Gaussian, its standard deviation ``noise`` times the feature's spread (per stock and
  feature, over the training rows);
* feature dropout (``feature_dropout``): each feature of each window zeroed over all W rows with this
  probability (zero is the training mean of a z-scored feature).

Noise and dropout leave the two flags (``first_bar``, ``tradeable``) alone: they state facts about a bar.
Every setting at 0 draws nothing; all at 0 build no augmenter at all (the worker's default path is untouched).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from parallel_dqn.config import AugmentConfig
from parallel_dqn.data.features import CLIP, FEATURE_NAMES, N_FEATURES, N_SCALED, FeatureStats

#: features whose raw value scales with the size of returns: log-returns, their standard deviations, the bar's range
RETURN_SCALE = tuple(FEATURE_NAMES.index(name) for name in ("ret_1", "ret_5", "ret_15", "ret_60", "vol_15", "vol_60", "range"))
#: features that state facts about a bar; noise and dropout leave them as they are
FLAGS = tuple(FEATURE_NAMES.index(name) for name in ("first_bar", "tradeable"))
SCENARIO_RANGE = 2.0  # scenario factors are log-uniform in [1 / SCENARIO_RANGE, SCENARIO_RANGE]
WARP_STRENGTH = 0.5  # a warped grid's steps are uniform in [1 - WARP_STRENGTH, 1 + WARP_STRENGTH] bars (rescaled)
FIT_BLOCK = 1 << 22  # feature values per block of FeatureScales.fit: 32 MB as float64
_STREAM = 0xA06  # tells the augmenter's random stream apart from the worker's other ones of the same seed


def augmenting(cfg: AugmentConfig) -> bool:
    """Whether any augmentation is on."""
    return any((cfg.noise, cfg.feature_dropout, cfg.time_warp, cfg.scenarios))


@dataclass(frozen=True)
class FeatureScales:
    """What augmentation knows of the training period's features, per stock and feature ``[S, F]``."""

    spread: np.ndarray  # standard deviation over the training rows of the (normalised) features; 0 for the flags
    offset: np.ndarray  # return-scale features: the raw training mean over the raw standard deviation; else 0

    @classmethod
    def fit(cls, features: np.ndarray, rows: tuple[int, int], stats: FeatureStats) -> FeatureScales:
        """From the normalised features ``[T, S, F]`` at the training rows ``[lo, hi)`` and their statistics."""
        T, S, F = features.shape
        if F < N_FEATURES:
            raise ValueError(f"augmentation needs the {N_FEATURES} features of data.features, not {F}")
        lo, hi = rows
        spread = np.zeros((S, F))
        # a block of stocks at a time, of about FIT_BLOCK values: no float64 copy of the whole period (a year of
        # minute bars of 64 stocks, the fixed block before, peaked at 1.2 GB of float64 copies and temporaries)
        step = max(1, FIT_BLOCK // max((hi - lo) * F, 1))
        for a in range(0, S, step):
            block = np.asarray(features[lo:hi, a : a + step], dtype=np.float64)
            spread[a : a + step] = block.std(axis=0) if hi - lo >= 2 else 0.0
        spread[:, FLAGS] = 0.0
        spread[:, N_FEATURES:] = 0.0  # inputs appended after data.features' (regime probabilities): left alone
        offset = np.zeros((S, F))
        scaled = [j for j in RETURN_SCALE if j < N_SCALED]
        offset[:, scaled] = np.asarray(stats.mean)[:, scaled] / np.asarray(stats.std)[:, scaled]
        return cls(spread=spread, offset=offset)


class Augmenter:
    """One worker's augmentation of its learning batches, with its own random stream (checkpointed)."""

    def __init__(
        self, cfg: AugmentConfig, scales: FeatureScales, seed: int, worker: int, device: torch.device | str = "cpu"
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        # drawn on the CPU whatever the device: the same run draws the same numbers on a GPU
        state = np.random.SeedSequence([seed, worker, _STREAM]).generate_state(1, dtype=np.uint64)[0]
        self.generator = torch.Generator().manual_seed(int(state))
        self.spread = torch.as_tensor(scales.spread, dtype=torch.float32, device=self.device)  # [S, F]
        self.offset = torch.as_tensor(scales.offset, dtype=torch.float32, device=self.device)  # [S, F]
        F = scales.spread.shape[1]
        self.return_scale = torch.zeros(F, dtype=torch.bool, device=self.device)
        self.return_scale[list(RETURN_SCALE)] = True
        # never dropped: the bar flags, and inputs appended after data.features' (regime probabilities)
        self.flags = torch.zeros(F, dtype=torch.bool, device=self.device)
        self.flags[list(FLAGS)] = True
        self.flags[N_FEATURES:] = True

    def __call__(
        self, windows: torch.Tensor, stocks: torch.Tensor | None, halves: int = 2
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``windows [halves * N, K, W, F]`` of ``stocks [halves * N, K]`` (None: every stock, K = S), the
        halves one after the other (``s`` then ``s'``), augmented with one draw per unit ``n < N`` for every
        half; and each unit's scenario factor ``[N]`` for its reward (None when scenarios are off)."""
        R, K, W, F = windows.shape
        n = R // halves
        spread = self.spread if stocks is None else self.spread[stocks]  # [S, F] or [R, K, F]
        offset = self.offset if stocks is None else self.offset[stocks]
        if stocks is None:
            spread, offset = spread[None], offset[None]
        factor = None
        # Warps and scenarios change a share of the units only: each is computed on those units' rows and put
        # back (the others would come out exactly as they went in), a few small operations instead of passes
        # over the whole batch.
        if self.cfg.time_warp:
            warped, grid = self.warp_grid(n, W)
            rows = self._rows(warped, n, halves)
            if len(rows):
                windows = windows.index_put((rows,), _resample(windows[rows], grid[rows % n]))
        if self.cfg.scenarios:
            factor = self.scenario_factors(n)
            rows = self._rows(factor != 1.0, n, halves)  # a factor of 1 changes nothing
            if len(rows):
                part, c = windows[rows], factor[rows % n][:, None, None, None]
                shift = (offset[rows] if stocks is not None else offset)[:, :, None, :]
                rescaled = (c * part + (c - 1) * shift).clamp(-CLIP, CLIP)
                windows = windows.index_put((rows,), torch.where(self.return_scale, rescaled, part))
        if self.cfg.noise or self.cfg.feature_dropout:
            windows = windows.reshape(halves, n, K, W, F)  # a unit's draws broadcast over its halves, not copied
            # products and sums, not addcmul and masked_fill: torch runs those about 2x and 4x slower when an
            # operand is broadcast
            if self.cfg.noise:
                scale = self.cfg.noise * spread.reshape(halves if stocks is not None else 1, -1, K, 1, F)
                windows = windows + self._draw(torch.randn, n, K, W, F) * scale
            if self.cfg.feature_dropout:
                dropped = (self._draw(torch.rand, n, K, F) < self.cfg.feature_dropout) & ~self.flags
                windows = windows * (~dropped).to(windows.dtype)[:, :, None, :]  # a dropped feature is 0
            windows = windows.reshape(R, K, W, F)
        return windows, factor

    def _rows(self, changed: torch.Tensor, n: int, halves: int) -> torch.Tensor:
        """The batch rows of the units ``changed [n]`` marks, in every half."""
        units = changed.nonzero()[:, 0]
        return (units[None, :] + n * torch.arange(halves, device=self.device)[:, None]).reshape(-1)

    def warp_grid(self, n: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Which units are warped ``[n]`` (a share ``time_warp`` of them) and ``[n, W]`` row positions in
        ``[0, W - 1]``, nondecreasing, first 0 and last ``W - 1``: a random warp for the warped units, the rows
        themselves for the others."""
        warped = self._draw(torch.rand, n) < self.cfg.time_warp
        steps = 1.0 + WARP_STRENGTH * (2.0 * self._draw(torch.rand, n, max(W - 1, 0)) - 1.0)
        grid = torch.cat([torch.zeros(n, 1, device=self.device), steps.cumsum(dim=1)], dim=1)
        grid = (grid / grid[:, -1:].clamp(min=1e-12) * (W - 1)).clamp(0.0, W - 1)
        return warped, torch.where(warped[:, None], grid, torch.arange(W, dtype=grid.dtype, device=self.device))

    def scenario_factors(self, n: int) -> torch.Tensor:
        """``[n]`` factors: log-uniform in ``[1/2, 2]`` for a share ``scenarios`` of the units, 1 for the others."""
        chosen = self._draw(torch.rand, n) < self.cfg.scenarios
        c = torch.exp((2.0 * self._draw(torch.rand, n) - 1.0) * math.log(SCENARIO_RANGE))
        return torch.where(chosen, c, torch.ones((), device=self.device))

    def _draw(self, sampler, *shape: int) -> torch.Tensor:
        """``sampler``'s numbers from this augmenter's stream (on the CPU), on its device."""
        return sampler(shape, generator=self.generator).to(self.device)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"rng": self.generator.get_state().numpy().copy()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(torch.from_numpy(np.asarray(state["rng"], dtype=np.uint8).copy()))


def _resample(windows: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``windows [R, K, W, F]`` at row positions ``grid [R, W]``, linearly between the two nearest rows (a
    position that is a row gives that row exactly): only the window's own rows are read."""
    R, K, W, F = windows.shape
    lo = grid.floor().long().clamp(0, W - 1)
    hi = (lo + 1).clamp(max=W - 1)
    frac = (grid - lo).to(windows.dtype)[:, None, :, None]

    def pick(rows: torch.Tensor) -> torch.Tensor:
        return windows.gather(2, rows[:, None, :, None].expand(R, K, W, F))

    return pick(lo) * (1 - frac) + pick(hi) * frac
