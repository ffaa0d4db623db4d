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


def djs_table(reference: np.ndarray, samples: dict[str, list[np.ndarray]], n_bins: list[int]) -> pd.DataFrame:
    """Rows (sample, n_bins, djs_mean, djs_std, n_sets, n_values, sparse): one bin set per
    quantile count built on ``reference`` ((n,) or (n, d) values), every set of every sample
    counted in it; ``sparse``: more bins than a tenth of the set's values (the paper omits
    those from its conclusions)."""
    rows = []
    for nb in n_bins:
        bins = build(reference, nb)
        p = bins.counts(reference)
        for name, sets in samples.items():
            if not sets:
                raise ValueError(f"sample {name!r} has no sets")
            values = [djs(p, bins.counts(s)) for s in sets]
            n_values = int(min(len(s) for s in sets))
            rows.append(
                {
                    "sample": name,
                    "n_bins": int(nb),
                    "djs_mean": float(np.mean(values)),
                    "djs_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                    "n_sets": len(values),
                    "n_values": n_values,
                    "sparse": nb > n_values // 10,
                }
            )
    return pd.DataFrame(rows)


def amplification_table(table: pd.DataFrame, sizes: dict[str, int], model: str, n_train: int) -> pd.DataFrame:
    """Per quantile count: the effective size of ``model`` against the reference samples named
    in ``sizes`` (name -> sample size; their non-sparse rows), the relation ("=", ">=" or "<="),
    and the amplification factor n_eff / n_train."""
    rows = []
    for nb, group in table.groupby("n_bins"):
        ref = group[group["sample"].isin(list(sizes)) & ~group["sparse"]]
        own = group[group["sample"] == model]
        if len(ref) < 2 or own.empty or bool(own["sparse"].iloc[0]):
            continue
        n = np.array([sizes[s] for s in ref["sample"]])
        n_eff, rel = effective_size(n, ref["djs_mean"].to_numpy(), float(own["djs_mean"].iloc[0]))
        rows.append({"n_bins": int(nb), "n_eff": n_eff, "relation": rel, "amplification": n_eff / n_train})
    return pd.DataFrame(rows, columns=["n_bins", "n_eff", "relation", "amplification"])


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


__all__ = [
    "OBSERVABLES",
    "amplification_table",
    "disjoint_sets",
    "djs_table",
    "image_observables",
    "plot_djs",
]
