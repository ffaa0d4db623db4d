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


__all__ = ["OBSERVABLES", "amplification_table", "djs_table", "image_observables"]
