"""Streaming accumulation of the validation observables and their comparison.

Showers are read in chunks; for each of three samples - two disjoint halves A
and B of the reference and the generated sample - the engine accumulates, in
energy bins (and theta bins where the dataset has angles):

* the mean and spread of every per-shower observable (:mod:`.features`),
* the mean energy profiles,
* the cell-energy spectrum, the sparsity versus threshold and the MSCN histogram,
* the correlation matrix of the shower features,
* small per-bin reservoirs of 2D projections (SSIM) and of feature vectors (KS),

each with Poisson-bootstrap replicas, so memory is bounded by the chunk size and
the number of bins, never by the number of showers.  :func:`compare` turns the
accumulators into metric rows: generated vs reference half A, and the baseline
reference half B vs half A ("what perfect looks like").
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import bootstrap, ks_2samp

from calofast.geometry import Geometry
from calofast.metrics.distances import CovarianceAccumulator, covariance_distance
from calofast.metrics.observables import energy_bins
from calofast.validation.features import (
    CORRELATION_FEATURES,
    geometry_kind,
    log_bins,
    mscn,
    profiles,
    projections_2d,
    shower_features,
)

#: file formats of the validation figures (PNG always: the report shows it)
FIGURE_FORMATS = ("png", "pdf", "svg")
DEFAULT_FIGURE_FORMATS = ("png", "pdf")


@dataclass(frozen=True)
class ValidationConfig:
    """Settings of the observable pass (config ``validation``)."""

    hit_threshold_mev: float | None = None  # None: the geometry's half a MIP (features.hit_threshold)
    n_energy_bins: int = 5
    n_theta_bins: int = 3
    n_bootstrap: int = 50
    max_sample: int = 20_000  # per sample: feature vectors kept for KS
    ssim_images_per_bin: int = 32
    ssim_data_ranges: tuple[float, ...] = (1.0, 1e-4)  # paper 000, Fig. 16
    cell_spectrum_mev: tuple[float, float, int] = (1e-4, 1e4, 80)
    sparsity_thresholds_mev: tuple[float, float, int] = (1e-4, 1e2, 24)
    mscn_range: tuple[float, float, int] = (-3.0, 25.0, 112)
    chunk_size: int = 256
    seed: int = 1
    figure_formats: tuple[str, ...] = DEFAULT_FIGURE_FORMATS  # of the validation figures (PNG: the report's)

    def __post_init__(self) -> None:
        formats = tuple(self.figure_formats)
        if "png" not in formats or not set(formats) <= set(FIGURE_FORMATS):
            raise ValueError(
                f"validation.figure_formats: png plus any of {list(FIGURE_FORMATS)} needed, got {list(formats)}"
            )
        object.__setattr__(self, "figure_formats", formats)
        for key in ("ssim_data_ranges", "cell_spectrum_mev", "sparsity_thresholds_mev", "mscn_range"):
            object.__setattr__(self, key, tuple(getattr(self, key)))


def _weighted_bin_sums(w: np.ndarray, onehot: np.ndarray, v: np.ndarray) -> np.ndarray:
    """sum_n w[b, n] onehot[n, k] v[n, f] -> (B, K, F), as one matrix product (einsum is slower)."""
    n, k = onehot.shape
    return (w @ (onehot[:, :, None] * v[:, None, :]).reshape(n, -1)).reshape(len(w), k, v.shape[1])


def _nanmean(a, axis: int) -> np.ndarray:
    """Mean over the non-NaN entries; NaN (without a warning) where all are NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


#: BMRE of the ATLAS delta-eta / delta-phi profiles: bins above this fraction of the peak.
DELTA_PROFILE_FLOOR = 1e-3


#: Features compared by an absolute difference (positions can be zero); the others relatively.
def _absolute(name: str) -> bool:
    return name.startswith(("m1_", "m3_", "angle_", "theta", "abs_90", "depth"))


@dataclass
class Binning:
    """Energy bins (MeV edges) and theta bins (degree edges, or none)."""

    energy_edges: np.ndarray
    theta_edges: np.ndarray | None

    @property
    def n_e(self) -> int:
        return len(self.energy_edges) - 1

    @property
    def n_t(self) -> int:
        return 0 if self.theta_edges is None else len(self.theta_edges) - 1

    def index(self, energy_mev: np.ndarray, theta: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(energy bin, theta bin) per shower; -1 outside; theta bin n_t means "all angles"."""
        eb = np.digitize(energy_mev, self.energy_edges) - 1
        eb = np.where((eb >= 0) & (eb < self.n_e), eb, -1)
        if self.theta_edges is None or theta is None:
            return eb, np.full(eb.shape, -1)
        tb = np.digitize(np.degrees(theta), self.theta_edges) - 1
        return eb, np.where((tb >= 0) & (tb < self.n_t), tb, -1)


def make_binning(energy_mev: np.ndarray, theta: np.ndarray | None, cfg: ValidationConfig) -> Binning:
    """Bins from the reference conditions: equal-population energy bins (one per discrete
    energy) and equal-width theta bins."""
    edges = energy_bins(energy_mev, cfg.n_energy_bins)
    if theta is None or cfg.n_theta_bins < 1:
        return Binning(edges, None)
    deg = np.degrees(theta)
    lo, hi = float(deg.min()), float(deg.max())
    return Binning(edges, np.linspace(lo - 1e-6, hi + 1e-6, cfg.n_theta_bins + 1))


@dataclass
class SampleStats:
    """Accumulators of one sample (a reference half or the generated showers).

    Every accumulator has a leading axis of size B + 1: index 0 is the sample
    itself, 1..B are Poisson-bootstrap replicas.  Binned quantities use a flat
    bin index ``e * (n_t + 1) + t`` where t = n_t means "all angles".
    """

    name: str
    cfg: ValidationConfig
    binning: Binning
    geometry: Geometry
    n: int = 0
    n_bins: np.ndarray | None = None  # (K,) showers per bin
    counts: np.ndarray | None = None  # (B + 1, K) weighted
    feature_keys: list[str] = field(default_factory=list)
    f1: np.ndarray | None = None  # (B + 1, K, F) sums of features
    f2: np.ndarray | None = None  # (B + 1, K, F) sums of squares
    profile_sums: dict[str, np.ndarray] = field(default_factory=dict)  # (B + 1, K, L)
    spectrum: np.ndarray | None = None  # (B + 1, bins) cell counts
    sparsity: np.ndarray | None = None  # (B + 1, bins) sums of per-shower fractions above each lower edge
    mscn_hist: np.ndarray | None = None  # (B + 1, bins)
    weight_total: np.ndarray | None = None  # (B + 1,)
    corr_keys: list[str] = field(default_factory=list)
    corr_s1: np.ndarray | None = None  # (B + 1, F)
    corr_s2: np.ndarray | None = None  # (B + 1, F, F)
    reservoir: dict[str, np.ndarray] = field(default_factory=dict)
    reservoir_keys: np.ndarray | None = None
    images: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    image_keys: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    chunk_index: int = 0
    cov: CovarianceAccumulator | None = None  # cell covariance (ATLAS: the 266 x 266 matrix)

    @property
    def shape(self) -> tuple[int, int]:
        return self.binning.n_e, self.binning.n_t + 1

    def add(
        self,
        cells: np.ndarray,
        energy_mev: np.ndarray,
        theta: np.ndarray | None,
        impact: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Accumulate one chunk of showers (cells in MeV; ``impact``: ATLAS (|eta|, phi))."""
        cfg, B = self.cfg, self.cfg.n_bootstrap
        if not np.all(np.isfinite(cells)):
            bad = int(np.flatnonzero(~np.isfinite(cells.reshape(len(cells), -1)).all(axis=1))[0])
            raise ValueError(f"{self.name}: shower {self.n + bad} has NaN or inf cells")
        n = cells.shape[0]
        rng = np.random.default_rng([cfg.seed, sum(map(ord, self.name)), self.chunk_index])
        self.chunk_index += 1
        w = np.vstack([np.ones((1, n)), rng.poisson(1.0, (B, n))])  # (B + 1, n)
        n_e, n_t1 = self.shape
        K = n_e * n_t1
        eb, tb = self.binning.index(energy_mev, theta)
        onehot = np.zeros((n, K))
        rows = np.arange(n)
        ok = eb >= 0
        onehot[rows[ok], eb[ok] * n_t1 + n_t1 - 1] = 1.0  # every shower: its energy bin, all angles
        okt = ok & (tb >= 0)
        onehot[rows[okt], eb[okt] * n_t1 + tb[okt]] = 1.0  # and its (energy, angle) bin
        proj = projections_2d(cells, self.geometry)  # computed once, shared by features and profiles
        feats = shower_features(cells, energy_mev, theta, self.geometry, cfg.hit_threshold_mev, proj, impact)
        if not self.feature_keys:
            self.feature_keys = list(feats)
            F = len(self.feature_keys)
            self.n_bins = np.zeros(K, dtype=np.int64)
            self.counts = np.zeros((B + 1, K))
            self.f1 = np.zeros((B + 1, K, F))
            self.f2 = np.zeros((B + 1, K, F))
        v = np.stack([feats[k] for k in self.feature_keys], axis=1)  # (n, F)
        self.n_bins += onehot.sum(axis=0).astype(np.int64)
        self.counts += w @ onehot
        self.f1 += _weighted_bin_sums(w, onehot, v)
        self.f2 += _weighted_bin_sums(w, onehot, v * v)
        if geometry_kind(self.geometry) == "atlas":
            self.cov = self.cov or CovarianceAccumulator()
            self.cov.add(cells.reshape(n, -1))
        for key, prof in profiles(cells, self.geometry, proj, impact).items():
            acc = _weighted_bin_sums(w, onehot, prof.astype(np.float64))
            self.profile_sums[key] = acc + self.profile_sums.get(key, 0.0)
        flat = cells.reshape(n, -1)
        # per-shower histograms of the non-zero cells -> spectrum and sparsity (thresholds = bin edges)
        lo, hi, nb = cfg.cell_spectrum_mev
        edges = log_bins(lo, hi, nb)
        hit = np.flatnonzero(flat > 0)  # faster than np.nonzero on the 2D array
        shower_of = hit // flat.shape[1]
        values = flat.ravel()[hit]
        idx = np.clip(np.digitize(values, edges) - 1, 0, nb - 1)
        per = np.bincount(shower_of * nb + idx, minlength=n * nb).reshape(n, nb).astype(np.float64)
        above = np.cumsum(per[:, ::-1], axis=1)[:, ::-1] / flat.shape[1]  # fraction of cells above each edge
        self.spectrum = w @ per + (0 if self.spectrum is None else self.spectrum)
        self.sparsity = w @ above + (0 if self.sparsity is None else self.sparsity)
        mlo, mhi, mb = cfg.mscn_range
        medges = np.linspace(mlo, mhi, mb + 1)
        per_m = np.stack([np.histogram(mscn(c[None]), bins=medges)[0] for c in cells]).astype(np.float64)
        self.mscn_hist = w @ per_m + (0 if self.mscn_hist is None else self.mscn_hist)
        self.weight_total = w.sum(axis=1) + (0 if self.weight_total is None else self.weight_total)
        if not self.corr_keys:
            self.corr_keys = [k for k in CORRELATION_FEATURES[geometry_kind(self.geometry)] if k in feats]
        x = np.stack([feats[k] for k in self.corr_keys], axis=1)
        self.corr_s1 = w @ x + (0 if self.corr_s1 is None else self.corr_s1)
        s2 = (w @ (x[:, :, None] * x[:, None, :]).reshape(len(x), -1)).reshape(len(w), x.shape[1], x.shape[1])
        self.corr_s2 = s2 + (0 if self.corr_s2 is None else self.corr_s2)
        self._keep_features(feats, rng)
        self._keep_images(proj, eb, rng)
        self.n += n

    def _keep_features(self, feats: dict[str, np.ndarray], rng: np.random.Generator) -> None:
        """A uniform random sample of at most max_sample showers' features (smallest random keys)."""
        keys = rng.random(len(next(iter(feats.values()))))
        allk = keys if self.reservoir_keys is None else np.concatenate([self.reservoir_keys, keys])
        keep = np.argsort(allk, kind="stable")[: self.cfg.max_sample]
        for k, v in feats.items():
            old = self.reservoir.get(k, np.zeros(0))
            self.reservoir[k] = np.concatenate([old, v])[keep]
        self.reservoir_keys = allk[keep]

    def _keep_images(self, proj: dict[str, np.ndarray], eb: np.ndarray, rng: np.random.Generator) -> None:
        """Per energy bin, a uniform sample of the normalised 2D projections ``proj`` (for SSIM)."""
        cap = self.cfg.ssim_images_per_bin
        for plane, imgs in proj.items():
            peak = imgs.reshape(len(imgs), -1).max(axis=1)
            imgs = imgs / np.where(peak > 0, peak, 1.0)[:, None, None]  # data range 1 after normalisation
            keys = rng.random(len(imgs))
            for e in np.unique(eb[eb >= 0]):
                sel = eb == e
                k = (plane, int(e))
                allk = np.concatenate([self.image_keys.get(k, np.zeros(0)), keys[sel]])
                alli = np.concatenate([self.images.get(k, np.zeros((0, *imgs.shape[1:]))), imgs[sel]])
                keep = np.argsort(allk, kind="stable")[:cap]
                self.images[k], self.image_keys[k] = alli[keep], allk[keep]

    # -- derived quantities -------------------------------------------------------------

    def _grid(self, x: np.ndarray) -> np.ndarray:
        n_e, n_t1 = self.shape
        return x.reshape(x.shape[0], n_e, n_t1, *x.shape[2:])

    def bins_count(self) -> np.ndarray:
        n_e, n_t1 = self.shape
        return self.n_bins.reshape(n_e, n_t1)

    def mean(self, key: str) -> np.ndarray:
        """(B + 1, n_e, n_t + 1) bin means of a feature; NaN where a bin is empty."""
        f = self.feature_keys.index(key)
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._grid(self.f1[..., f] / self.counts)

    def std(self, key: str) -> np.ndarray:
        f = self.feature_keys.index(key)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = self.f1[..., f] / self.counts
            return self._grid(np.sqrt(np.maximum(self.f2[..., f] / self.counts - m * m, 0.0)))

    def profile(self, key: str) -> np.ndarray:
        """(B + 1, n_e, n_t + 1, L) mean profiles."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._grid(self.profile_sums[key] / self.counts[..., None])

    def correlation(self, keys: list[str] | None = None) -> np.ndarray:
        """(B + 1, F, F) correlation matrices of the shower features (``keys``: of these only, in
        this order)."""
        n = self.weight_total[:, None]
        mean = self.corr_s1 / n
        cov = self.corr_s2 / n[..., None] - mean[:, :, None] * mean[:, None, :]
        sd = np.sqrt(np.maximum(np.einsum("bii->bi", cov), 1e-300))
        corr = cov / (sd[:, :, None] * sd[:, None, :])
        if keys is None:
            return corr
        i = [self.corr_keys.index(k) for k in keys]
        return corr[:, i][:, :, i]


# --------------------------------------------------------------------------- comparison


def _rel(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(a - ref) / np.abs(ref)


def _spread(x: np.ndarray) -> float:
    """Bootstrap standard deviation (over axis 0, NaN-aware)."""
    x = np.asarray(x, dtype=np.float64)
    good = x[np.isfinite(x)]
    return float(np.std(good, ddof=1)) if good.size > 1 else float("nan")


def _row(
    observable: str,
    detail: str,
    binning: Binning,
    e: int | None,
    t: int | None,
    value: np.ndarray,
    base: np.ndarray,
    n_ref: int,
    n_gen: int,
    kind: str,
) -> dict[str, Any]:
    """One metric row from (B + 1,) arrays of the generated and baseline comparisons."""
    row: dict[str, Any] = {
        "observable": observable,
        "detail": detail,
        "kind": kind,
        "e_lo_gev": None,
        "e_hi_gev": None,
        "theta_lo_deg": None,
        "theta_hi_deg": None,
        "n_ref": int(n_ref),
        "n_gen": int(n_gen),
    }
    if e is not None:
        row["e_lo_gev"] = float(binning.energy_edges[e]) / 1e3
        row["e_hi_gev"] = float(binning.energy_edges[e + 1]) / 1e3
    if t is not None and binning.theta_edges is not None and t < binning.n_t:
        row["theta_lo_deg"] = float(binning.theta_edges[t])
        row["theta_hi_deg"] = float(binning.theta_edges[t + 1])
    if n_ref < 2 or n_gen < 2 or not np.isfinite(value[0]):
        row.update(value=None, uncertainty=None, baseline=None, baseline_uncertainty=None, status="empty bin")
        return row
    row.update(
        value=float(value[0]),
        uncertainty=_spread(value[1:]),
        baseline=float(base[0]) if np.isfinite(base[0]) else None,
        baseline_uncertainty=_spread(base[1:]),
        status="ok",
    )
    return row


def compare(ref_a: SampleStats, ref_b: SampleStats, gen: SampleStats, model: str) -> list[dict[str, Any]]:
    """Metric rows: each observable and bin, generated vs reference half A with its bootstrap
    uncertainty, and the baseline reference half B vs half A."""
    binning = ref_a.binning
    rows: list[dict[str, Any]] = []
    n_e, n_t1 = binning.n_e, binning.n_t + 1
    all_t = n_t1 - 1
    theta_bins = list(range(binning.n_t)) + [all_t]
    na, ng = ref_a.bins_count(), gen.bins_count()
    for key in ref_a.feature_keys:
        ma, mb, mg = ref_a.mean(key), ref_b.mean(key), gen.mean(key)
        metric = (lambda x, r: np.abs(x - r)) if _absolute(key) else _rel
        kind = "absolute difference of the mean" if _absolute(key) else "relative error of the mean"
        for t in theta_bins if key in ("sf", "angle_measured_deg") else [all_t]:
            per_bin_g, per_bin_b = [], []
            for e in range(n_e):
                vg, vb = metric(mg[:, e, t], ma[:, e, t]), metric(mb[:, e, t], ma[:, e, t])
                rows.append(_row(key, "mean", binning, e, t, vg, vb, na[e, t], ng[e, t], kind))
                if rows[-1]["status"] == "ok":
                    per_bin_g.append(vg)
                    per_bin_b.append(vb)
            if per_bin_g:  # the mean over energy bins (for sf: the epoch-selection MRE)
                rows.append(
                    _row(
                        key,
                        "mean over energy bins",
                        binning,
                        None,
                        t,
                        _nanmean(per_bin_g, axis=0),
                        _nanmean(per_bin_b, axis=0),
                        ref_a.n,
                        gen.n,
                        kind,
                    )
                )
        if key in ("sf", "e_sum"):  # resolution
            sa, sb, sg = (
                ref_a.std(key) / ref_a.mean(key),
                ref_b.std(key) / ref_b.mean(key),
                gen.std(key) / gen.mean(key),
            )
            for e in range(n_e):
                rows.append(
                    _row(
                        f"{key}_resolution",
                        "relative width",
                        binning,
                        e,
                        all_t,
                        _rel(sg[:, e, all_t], sa[:, e, all_t]),
                        _rel(sb[:, e, all_t], sa[:, e, all_t]),
                        na[e, all_t],
                        ng[e, all_t],
                        "relative error of std/mean",
                    )
                )
    for key in ref_a.profile_sums:
        pa, pb, pg = ref_a.profile(key), ref_b.profile(key), gen.profile(key)
        # the ATLAS delta-eta/phi bins reach past the cells of most window positions: their
        # structurally near-empty edge bins (< 1e-3 of the peak) would dominate a relative error
        floor = DELTA_PROFILE_FLOOR if key.startswith(("deta_", "dphi_")) else 0.0
        for e in list(range(n_e)):
            ref = pa[:, e, all_t]
            mask = ref[0] > floor * np.nanmax(ref[0], initial=0.0)
            vg = (
                _nanmean(_rel(pg[:, e, all_t][:, mask], ref[:, mask]), axis=1)
                if mask.any()
                else np.full(len(ref), np.nan)
            )
            vb = (
                _nanmean(_rel(pb[:, e, all_t][:, mask], ref[:, mask]), axis=1)
                if mask.any()
                else np.full(len(ref), np.nan)
            )
            rows.append(
                _row(
                    f"profile_{key}",
                    "binned mean relative error",
                    binning,
                    e,
                    all_t,
                    vg,
                    vb,
                    na[e, all_t],
                    ng[e, all_t],
                    "BMRE",
                )
            )
    for name, attr in (("cell_spectrum", "spectrum"), ("mscn", "mscn_hist")):
        ha, hb, hg = getattr(ref_a, attr), getattr(ref_b, attr), getattr(gen, attr)
        jg = np.array(
            [jensenshannon(hg[b], ha[b], base=2) if hg[b].sum() and ha[b].sum() else np.nan for b in range(len(ha))]
        )
        jb = np.array(
            [jensenshannon(hb[b], ha[b], base=2) if hb[b].sum() and ha[b].sum() else np.nan for b in range(len(ha))]
        )
        rows.append(_row(name, "Jensen-Shannon distance", binning, None, None, jg, jb, ref_a.n, gen.n, "JSD"))
    sa = ref_a.sparsity / ref_a.weight_total[:, None]
    sb = ref_b.sparsity / ref_b.weight_total[:, None]
    sg = gen.sparsity / gen.weight_total[:, None]
    mask = sa[0] > 0
    rows.append(
        _row(
            "sparsity",
            "BMRE over thresholds",
            binning,
            None,
            None,
            _nanmean(_rel(sg[:, mask], sa[:, mask]), axis=1),
            _nanmean(_rel(sb[:, mask], sa[:, mask]), axis=1),
            ref_a.n,
            gen.n,
            "BMRE",
        )
    )
    # the features all three samples have (a model may write a condition, e.g. theta = 90 deg, that
    # a normal-incidence reference lacks)
    keys = [k for k in ref_a.corr_keys if k in ref_b.corr_keys and k in gen.corr_keys]
    ca, cb, cg = ref_a.correlation(keys), ref_b.correlation(keys), gen.correlation(keys)
    off = ~np.eye(ca.shape[1], dtype=bool)
    rows.append(
        _row(
            "correlation",
            "mean |difference| of correlation coefficients",
            binning,
            None,
            None,
            np.abs(cg - ca)[:, off].mean(axis=1),
            np.abs(cb - ca)[:, off].mean(axis=1),
            ref_a.n,
            gen.n,
            "mean absolute difference",
        )
    )
    rows.append(
        _row(
            "correlation",
            "entropic Gromov-Wasserstein discrepancy",
            binning,
            None,
            None,
            np.array([gromov_discrepancy(cg[b], ca[b]) for b in range(min(len(ca), 6))]),
            np.array([gromov_discrepancy(cb[b], ca[b]) for b in range(min(len(ca), 6))]),
            ref_a.n,
            gen.n,
            "GW",
        )
    )
    if ref_a.cov is not None and ref_b.cov is not None and gen.cov is not None and min(ref_b.n, gen.n) > 1:
        c_a = ref_a.cov.covariance()
        rows.append(  # paper 001's selection metric, in MeV cells; no bootstrap replicas
            _row(
                "cell_covariance",
                "||C_gen - C_ref||_F / ||C_ref||_F of the cell covariance",
                binning,
                None,
                None,
                np.array([covariance_distance(c_a, gen.cov.covariance())]),
                np.array([covariance_distance(c_a, ref_b.cov.covariance())]),
                ref_a.n,
                gen.n,
                "normalised Frobenius distance",
            )
        )
    rows += _ks_rows(ref_a, ref_b, gen, binning)
    rows += _ssim_rows(ref_a, ref_b, gen, binning)
    for r in rows:
        r["model"] = model
    return rows


def gromov_discrepancy(c1: np.ndarray, c2: np.ndarray, epsilon: float = 5e-3) -> float:
    """Entropic Gromov-Wasserstein discrepancy between two (correlation) matrices (POT)."""
    import ot

    n = c1.shape[0]
    p = np.full(n, 1.0 / n)
    d1, d2 = 1.0 - np.nan_to_num(c1), 1.0 - np.nan_to_num(c2)
    with warnings.catch_warnings():
        # the inner Sinkhorn iterations of this small problem stop at their cap before their
        # tolerance; the discrepancy is stable (checked against 20x more iterations)
        warnings.filterwarnings("ignore", message="Sinkhorn did not converge")
        return float(ot.gromov.entropic_gromov_wasserstein2(d1, d2, p, p, "square_loss", epsilon=epsilon))


def _ks_bootstrap(x: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """KS distances of ``n`` bootstrap resamples of both samples (scipy.stats.bootstrap)."""
    with warnings.catch_warnings():  # a degenerate distribution only affects the unused interval
        warnings.simplefilter("ignore")
        res = bootstrap(
            (x, y),
            lambda u, v: ks_2samp(u, v, method="asymp").statistic,
            n_resamples=n,
            vectorized=False,
            method="percentile",
            random_state=rng,
        )
    return res.bootstrap_distribution


def _ks_rows(ref_a: SampleStats, ref_b: SampleStats, gen: SampleStats, binning: Binning) -> list[dict]:
    rows = []
    rng = np.random.default_rng(ref_a.cfg.seed)
    n_boot = min(ref_a.cfg.n_bootstrap, 20)
    for key, a in ref_a.reservoir.items():
        b, g = ref_b.reservoir.get(key), gen.reservoir.get(key)
        if key in ("e_p", "theta_deg", "abs_90_minus_theta") or b is None or g is None or min(a.size, g.size) < 2:
            continue
        # method asymp: the same statistic without scipy's exact p-value (seconds per call at
        # ~10^4 showers; the p-value is not used)
        vg = [ks_2samp(g, a, method="asymp").statistic, *_ks_bootstrap(g, a, n_boot, rng)]
        vb = [ks_2samp(b, a, method="asymp").statistic, *_ks_bootstrap(b, a, n_boot, rng)]
        rows.append(
            _row(
                f"ks_{key}",
                "two-sample KS distance, all energies",
                binning,
                None,
                None,
                np.array(vg),
                np.array(vb),
                a.size,
                g.size,
                "KS",
            )
        )
    return rows


def _mean_ssim(
    x: np.ndarray, y: np.ndarray, data_range: float, rng: np.random.Generator, same: bool = False
) -> np.ndarray:
    """SSIM of each image of ``x`` with a random image of ``y`` (not itself when ``same``)."""
    from skimage.metrics import structural_similarity

    vals = []
    for i in range(min(len(x), len(y))):
        j = int(rng.integers(0, len(y)))
        if same and j == i:
            continue
        vals.append(structural_similarity(x[i], y[j], data_range=data_range))
    return np.array(vals)


def _ssim_rows(ref_a: SampleStats, ref_b: SampleStats, gen: SampleStats, binning: Binning) -> list[dict]:
    """Per energy bin and projection plane: SSIM of reference vs generated (value), reference
    half A vs half B (baseline) and generated vs generated, for each data range L."""
    rows = []
    rng = np.random.default_rng(ref_a.cfg.seed + 1)
    empty = np.zeros((0,))
    for (plane, e), a_imgs in sorted(ref_a.images.items()):
        b_imgs, g_imgs = ref_b.images.get((plane, e), empty), gen.images.get((plane, e), empty)
        for L in ref_a.cfg.ssim_data_ranges:
            vg = _mean_ssim(a_imgs, g_imgs, L, rng)
            vb = _mean_ssim(a_imgs, b_imgs, L, rng)
            vgg = _mean_ssim(g_imgs, g_imgs, L, rng, same=True)
            row = _row(
                f"ssim_{plane}",
                f"mean SSIM, data range {L:g}",
                binning,
                e,
                None,
                np.concatenate([[vg.mean()], _boot_means(vg, rng)]) if vg.size else np.array([np.nan]),
                np.concatenate([[vb.mean()], _boot_means(vb, rng)]) if vb.size else np.array([np.nan]),
                len(a_imgs),
                len(g_imgs),
                "SSIM (ref vs gen; baseline ref vs ref)",
            )
            row["gen_vs_gen"] = float(vgg.mean()) if vgg.size else None
            row["data_range"] = L
            rows.append(row)
    return rows


def _boot_means(x: np.ndarray, rng: np.random.Generator, n: int = 30) -> np.ndarray:
    return np.array([x[rng.integers(0, x.size, x.size)].mean() for _ in range(n)])


def summary_score(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Headline numbers: the sampling-fraction MRE and the profile BMREs (value and baseline)."""
    out = {}
    for r in rows:
        if r["detail"] == "mean over energy bins" and r["observable"] == "sf" and r["theta_lo_deg"] is None:
            out["sf_mre"] = {"value": r["value"], "uncertainty": r["uncertainty"], "baseline": r["baseline"]}
    for key in {r["observable"] for r in rows if r["observable"].startswith("profile_")}:
        vals = [r for r in rows if r["observable"] == key and r["status"] == "ok"]
        if vals:
            out[f"{key}_bmre"] = {
                "value": float(np.mean([r["value"] for r in vals])),
                "baseline": float(np.mean([r["baseline"] for r in vals if r["baseline"] is not None])),
            }
    return out


def merge(a: SampleStats, b: SampleStats, name: str = "reference") -> SampleStats:
    """The union of two samples' accumulators (the full reference for figures)."""
    out = SampleStats(name, a.cfg, a.binning, a.geometry)
    out.n = a.n + b.n
    for attr in (
        "n_bins",
        "counts",
        "f1",
        "f2",
        "spectrum",
        "sparsity",
        "mscn_hist",
        "weight_total",
        "corr_s1",
        "corr_s2",
    ):
        setattr(out, attr, getattr(a, attr) + getattr(b, attr))
    out.feature_keys, out.corr_keys = a.feature_keys, a.corr_keys
    out.profile_sums = {k: a.profile_sums[k] + b.profile_sums[k] for k in a.profile_sums}
    out.reservoir = {k: np.concatenate([a.reservoir[k], b.reservoir.get(k, np.zeros(0))]) for k in a.reservoir}
    out.images = {k: np.concatenate([v, b.images[k]]) if k in b.images else v for k, v in a.images.items()}
    if a.cov is not None and b.cov is not None:
        out.cov = a.cov.merged(b.cov)
    return out
