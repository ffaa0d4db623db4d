"""The GANplification study's observables and tables (paper 003, eq. 2.2 and section 4).

* :func:`image_observables` - on pooled images (n, H, W) in MeV after the pixel cut: the visible
  energy sum, the peak pixel energy, the per-pixel energies above the E_pixel cut (a variable
  number per shower) and the energy centre of gravity in x (axis 1) and y (axis 2), pixels;
* :func:`djs_table` - per evaluated sample (independent sets of one kind: a Geant4 size, a model,
  a baseline) and quantile count, the mean and standard deviation over its sets of the quantile
  D_JS against the reference (validation) values, flagged sparse above n / 10 bins;
* :func:`amplification_table` - per quantile count, the reference-sample size the model matches
  (:func:`calofast.amplification.factor.effective_size`) over the training size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from calofast.amplification.factor import effective_size
from calofast.amplification.quantiles import build, djs

OBSERVABLES = ("e_vis", "e_peak", "e_pixel", "cog_x", "cog_y")
#: D_JS values below this count as this in the log-log interpolation of the effective size
DJS_FLOOR = 1e-12


def image_observables(
    images: np.ndarray, pixel_cut_mev: float = 0.1, e_pixel_cut_mev: float = 5.0
) -> dict[str, np.ndarray]:
    """Observables of (n, H, W) images [MeV]: pixels below ``pixel_cut_mev`` (half a MIP, the
    paper's evaluation cut) are zeroed first; ``e_pixel`` holds every pixel above
    ``e_pixel_cut_mev`` of every shower; showers without energy get a centre of gravity at the
    image centre."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 3 or not np.isfinite(x).all():
        raise ValueError(f"images must be finite (n, H, W), got shape {x.shape}")
    x = np.where(x >= pixel_cut_mev, x, 0.0)
    total = x.sum(axis=(1, 2))
    safe = np.where(total > 0, total, 1.0)
    h, w = x.shape[1:]
    cog_x = np.where(total > 0, x.sum(axis=2) @ np.arange(h) / safe, (h - 1) / 2)
    cog_y = np.where(total > 0, x.sum(axis=1) @ np.arange(w) / safe, (w - 1) / 2)
    return {
        "e_vis": total,
        "e_peak": x.max(axis=(1, 2)),
        "e_pixel": x[x > e_pixel_cut_mev],
        "cog_x": cog_x,
        "cog_y": cog_y,
    }


def observable_ranges(observables: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """The fixed histogram range of every observable: the reference's min and max (a
    degenerate range is widened by one unit)."""
    out = {}
    for name, v in observables.items():
        if len(v) == 0:
            raise ValueError(f"observable {name!r} has no values (no pixel above the cut?)")
        lo, hi = float(np.min(v)), float(np.max(v))
        out[name] = (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)
    return out


def histogram_djs(
    reference: dict[str, np.ndarray],
    sample: dict[str, np.ndarray],
    ranges: dict[str, tuple[float, float]],
    n_bins: int = 100,
) -> dict[str, float]:
    """The paper's epoch score (section 2): per observable, the Jensen-Shannon divergence of
    ``n_bins``-bin histograms over the fixed ``ranges`` (values outside fall in the edge bins,
    so a sample cannot hide showers outside the reference's range), and their mean
    (``"mean"``). A sample without values of an observable scores ln 2 in it."""
    out = {}
    for name, (lo, hi) in ranges.items():
        edges = np.linspace(lo, hi, n_bins + 1)
        p = np.histogram(np.clip(reference[name], lo, hi), edges)[0]
        g = np.histogram(np.clip(sample[name], lo, hi), edges)[0]
        out[name] = djs(p, g) if g.sum() > 0 else float(np.log(2.0))
    out["mean"] = float(np.mean([out[k] for k in ranges]))
    return out


def djs_values(reference: np.ndarray, samples: dict[str, list[np.ndarray]], n_bins: list[int]) -> pd.DataFrame:
    """Long table (sample, n_bins, set, djs, n_values): the quantile D_JS of every set of every
    sample against ``reference`` ((n,) or (n, d) values), one bin set per quantile count built
    on the reference."""
    rows = []
    for nb in n_bins:
        bins = build(reference, nb)
        p = bins.counts(reference)
        for name, sets in samples.items():
            if not sets:
                raise ValueError(f"sample {name!r} has no sets")
            for k, values in enumerate(sets):
                rows.append(
                    {
                        "sample": name,
                        "n_bins": int(nb),
                        "set": k,
                        "djs": djs(p, bins.counts(values)),
                        "n_values": len(values),
                    }
                )
    return pd.DataFrame(rows)


def djs_table(reference: np.ndarray, samples: dict[str, list[np.ndarray]], n_bins: list[int]) -> pd.DataFrame:
    """Rows (sample, n_bins, djs_mean, djs_std, n_sets, n_values, sparse) summarising
    :func:`djs_values`; ``sparse``: more bins than a tenth of the smallest set's values (the
    paper omits those from its conclusions)."""
    return summarise(djs_values(reference, samples, n_bins))


def summarise(values: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over the sets of each (sample, n_bins) of a long table."""
    rows = []
    for (name, nb), group in values.groupby(["sample", "n_bins"], sort=False):
        v = group["djs"].to_numpy()
        n_values = int(group["n_values"].min())
        rows.append(
            {
                "sample": name,
                "n_bins": int(nb),
                "djs_mean": float(np.mean(v)),
                "djs_std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                "n_sets": len(v),
                "n_values": n_values,
                "sparse": nb > n_values // 10,
            }
        )
    return pd.DataFrame(rows)


def amplification_table(
    table: pd.DataFrame, sizes: dict[str, int], model: str, n_train: int, values: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per quantile count: the effective size of ``model`` against the reference samples named
    in ``sizes`` (name -> sample size; their non-sparse rows) from its mean D_JS, the relation
    ("=", ">=" or "<="), the amplification factor n_eff / n_train and, given the long table
    ``values`` (:func:`djs_values`), the mean and standard deviation of the factor over the
    model's sets (each set's D_JS against the reference samples' mean curve)."""
    rows = []
    for nb, group in table.groupby("n_bins"):
        ref = group[group["sample"].isin(list(sizes)) & ~group["sparse"]]
        own = group[group["sample"] == model]
        if len(ref) < 2 or own.empty or bool(own["sparse"].iloc[0]):
            continue
        n = np.array([sizes[s] for s in ref["sample"]])
        # an exact 0 (a sample split like the reference by few quantiles) is floored for the log
        curve = np.maximum(ref["djs_mean"].to_numpy(), DJS_FLOOR)
        n_eff, rel = effective_size(n, curve, max(float(own["djs_mean"].iloc[0]), DJS_FLOOR))
        row = {"n_bins": int(nb), "n_eff": n_eff, "relation": rel, "amplification": n_eff / n_train}
        if values is not None:
            per_set = values[(values["sample"] == model) & (values["n_bins"] == nb)]["djs"].to_numpy()
            factors = np.array([effective_size(n, curve, max(float(d), DJS_FLOOR))[0] / n_train for d in per_set])
            row["amplification_mean"] = float(factors.mean())
            row["amplification_std"] = float(factors.std(ddof=1)) if len(factors) > 1 else 0.0
        rows.append(row)
    columns = ["n_bins", "n_eff", "relation", "amplification"]
    if values is not None:
        columns += ["amplification_mean", "amplification_std"]
    return pd.DataFrame(rows, columns=columns)


def disjoint_sets(n_total: int, sizes: dict[str, tuple[int, int]], seed: int) -> dict[str, list[np.ndarray]]:
    """Index sets of a pool of ``n_total`` showers, no shower in two sets: ``sizes`` maps a name
    to (number of sets, showers per set), e.g. ``{"train": (5, 1000), "g4_5000": (5, 5000)}``;
    whatever is left is the reference (``"reference"``). One seeded permutation, the sets taken
    in the order given, so a set keeps its showers when later entries change."""
    need = sum(k * n for k, n in sizes.values())
    if need >= n_total:
        raise ValueError(f"the sets need {need} showers, the pool has {n_total} (and the reference needs the rest)")
    order = np.random.default_rng(seed).permutation(n_total)
    out, start = {}, 0
    for name, (k, n) in sizes.items():
        if k < 1 or n < 1:
            raise ValueError(f"{name}: at least one set of at least one shower, got {k} x {n}")
        out[name] = [np.sort(order[start + i * n : start + (i + 1) * n]) for i in range(k)]
        start += k * n
    out["reference"] = [np.sort(order[start:])]
    return out


def plot_djs(table: pd.DataFrame, title: str, path) -> None:
    """D_JS against the number of quantiles per sample (mean and the spread over its sets as a
    band; dashed where the bins are sparse), the paper's Figs. 6, 7, 9 and 10."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from calofast.util.files import save_figure

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, rows in table.groupby("sample", sort=False):
        rows = rows.sort_values("n_bins")
        x, y, e = rows["n_bins"].to_numpy(), rows["djs_mean"].to_numpy(), rows["djs_std"].to_numpy()
        dense = ~rows["sparse"].to_numpy()
        (line,) = ax.plot(x[dense], y[dense], marker="o", ms=3, label=name)
        ax.plot(x, y, ls="--", color=line.get_color(), alpha=0.5)
        ax.fill_between(x, np.maximum(y - e, 1e-12), y + e, color=line.get_color(), alpha=0.2)
    ax.set(xscale="log", yscale="log", xlabel="number of quantiles", ylabel=r"$\bar D_{JS}$", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_observables(samples: dict[str, dict[str, np.ndarray]], title: str, path, n_bins: int = 50) -> None:
    """The five observables of each sample (name -> :func:`image_observables` output) as
    normalised step histograms over the first sample's range (the paper's Fig. 4), E_pixel
    on log axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from calofast.util.files import save_figure

    labels = {
        "e_vis": r"$E_{vis}$ [MeV]",
        "e_peak": r"$E_{peak}$ [MeV]",
        "e_pixel": r"$E_{pixel}$ [MeV]",
        "cog_x": r"$CG_x$ [pixel]",
        "cog_y": r"$CG_y$ [pixel]",
    }
    first = next(iter(samples.values()))
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.4))
    for ax, key in zip(axes, OBSERVABLES):
        ref = first[key]
        if key == "e_pixel":
            lo = max(float(np.min(ref)), 1e-3) if len(ref) else 1.0
            edges = np.geomspace(lo, max(float(np.max(ref)) if len(ref) else 10.0, lo * 10), n_bins + 1)
            ax.set(xscale="log", yscale="log")
        else:
            lo, hi = (float(np.min(ref)), float(np.max(ref))) if len(ref) else (0.0, 1.0)
            edges = np.linspace(lo, hi if hi > lo else lo + 1.0, n_bins + 1)
        for name, obs in samples.items():
            if len(obs[key]):
                ax.hist(np.clip(obs[key], edges[0], edges[-1]), edges, density=True, histtype="step", label=name)
        ax.set(xlabel=labels[key], ylabel="normalised")
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


__all__ = [
    "OBSERVABLES",
    "amplification_table",
    "disjoint_sets",
    "djs_table",
    "djs_values",
    "histogram_djs",
    "observable_ranges",
    "image_observables",
    "plot_djs",
    "plot_observables",
    "summarise",
]
