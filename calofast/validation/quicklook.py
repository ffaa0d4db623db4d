"""Quick-look figure of a canonical shower file (streamed, HEP style via mplhep)."""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mplhep as hep  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from calofast.data import io  # noqa: E402
from calofast.geometry import AtlasEMBarrel, Geometry, file_geometry  # noqa: E402
from calofast.geometry.calochallenge import CaloChallengeGeometry  # noqa: E402
from calofast.util.files import save_figure, write_json


def quicklook_stats(path: str | os.PathLike, max_showers: int = 5000, chunk_size: int | None = None) -> dict[str, Any]:
    """Accumulate the quick-look quantities over the first ``max_showers`` showers."""
    with io.open_h5(path) as f:
        attrs = io.check_canonical(f, path)
    geometry = file_geometry(attrs)
    if chunk_size is None:
        chunk_size = io.default_chunk_size(geometry.cell_shape)
    n_seen = 0
    layer_sum = np.zeros(geometry.n_layers)
    projections: dict[str, np.ndarray] = {}
    e_sum: list[np.ndarray] = []
    e_inc: list[np.ndarray] = []
    frac_by_energy: dict[float, list] | None = {}
    example = None
    for _, chunk in io.iter_chunks(path, chunk_size, ("showers", "energy"), stop=max_showers):
        s = chunk["showers"].astype(np.float64)
        n_seen += s.shape[0]
        layers = geometry.layer_energies(s)
        layer_sum += layers.sum(axis=0)
        energy = chunk["energy"].astype(np.float64)
        values = np.unique(energy)
        if frac_by_energy is not None and len(set(frac_by_energy) | set(values.tolist())) > 20:
            frac_by_energy = None  # a continuous spectrum: no per-energy fractions
        for value in values if frac_by_energy is not None else ():
            sel = energy == value
            acc = frac_by_energy.setdefault(float(value), [np.zeros(geometry.n_layers), 0])
            acc[0] += (layers[sel] / value).sum(axis=0)
            acc[1] += int(sel.sum())
        for key, value in lateral_projections(geometry, s).items():
            projections[key] = projections.get(key, 0.0) + value
        e_sum.append(s.reshape(s.shape[0], -1).sum(axis=1))
        e_inc.append(energy)
        if example is None:  # the shower closest to the chunk's median energy
            i = int(np.argmin(np.abs(energy - np.median(energy))))
            example = (s[i], float(energy[i]))
    if n_seen == 0:
        raise io.DataFormatError(f"{path}: no showers to plot")
    esum = np.concatenate(e_sum)
    einc = np.concatenate(e_inc)
    return {
        "geometry": geometry,
        "attrs": attrs,
        "n": n_seen,
        "mean_layer_energy_mev": layer_sum / n_seen,
        "projections": {k: v / n_seen for k, v in projections.items()},
        "e_sum": esum,
        "e_inc": einc,
        "example": example,
        # mean per-layer fraction E_layer / E_inc for each discrete incident energy
        "layer_fraction_by_energy": {e: acc[0] / acc[1] for e, acc in (frac_by_energy or {}).items()},
    }


def lateral_projections(geometry: Geometry, showers: np.ndarray) -> dict[str, np.ndarray]:
    """Lateral energy projections summed over the showers of a chunk.

    Grid calorimeters: along x and y (all layers); ATLAS: along eta and phi in
    the middle layer; CaloChallenge: along r (all layers and alpha bins).
    """
    if isinstance(geometry, AtlasEMBarrel):
        mid = geometry.layer_images(showers)["middle"]
        return {"eta": mid.sum(axis=(0, 2)), "phi": mid.sum(axis=(0, 1))}
    if isinstance(geometry, CaloChallengeGeometry):
        return {"r": geometry.radial_profile(showers)[1].sum(axis=0)}
    return {"x": showers.sum(axis=(0, 2, 3)), "y": showers.sum(axis=(0, 1, 3))}


def example_image(geometry: Geometry, shower: np.ndarray) -> tuple[np.ndarray, str, str]:
    """A 2D view of one shower and its axis labels (rows along the first label)."""
    if isinstance(geometry, AtlasEMBarrel):
        return geometry.layer_images(shower[None])["middle"][0], "eta cell (middle layer)", "phi cell"
    if isinstance(geometry, CaloChallengeGeometry):
        energies = geometry.layer_energies(shower[None])[0]
        ly = geometry.layers[int(np.argmax(energies))]
        img = shower[ly.base : ly.base + ly.n_u * ly.n_v].reshape(ly.n_u, ly.n_v)
        return img, f"alpha bin ({ly.name}, the most energetic layer)", "r bin"
    return shower.sum(axis=2), "x cell", "y cell"


def response_vs_energy(e_inc: np.ndarray, e_sum: np.ndarray, n_bins: int = 10) -> dict[str, list[float]]:
    """Mean, spread and error of E_sum/E_inc in bins of E_inc (discrete energies kept apart)."""
    ratio = e_sum / e_inc
    values = np.unique(e_inc)
    if values.size <= 20:
        groups = [e_inc == v for v in values]
        centers = values
    else:
        edges = np.quantile(e_inc, np.linspace(0, 1, n_bins + 1))
        idx = np.clip(np.searchsorted(edges, e_inc, side="right") - 1, 0, n_bins - 1)
        groups = [idx == i for i in range(n_bins)]
        centers = np.array([e_inc[g].mean() if g.any() else np.nan for g in groups])
    out: dict[str, list[float]] = {"energy_gev": [], "mean": [], "std": [], "err": [], "n": []}
    for c, g in zip(centers, groups):
        if g.sum() < 2:
            continue
        r = ratio[g]
        out["energy_gev"].append(float(c) / 1000.0)
        out["mean"].append(float(r.mean()))
        out["std"].append(float(r.std(ddof=1)))
        out["err"].append(float(r.std(ddof=1) / np.sqrt(g.sum())))
        out["n"].append(int(g.sum()))
    return out


def plot_quicklook(
    path: str | os.PathLike,
    out_png: str | os.PathLike,
    out_pdf: str | os.PathLike,
    out_json: str | os.PathLike,
    dataset: str,
    max_showers: int = 5000,
) -> dict[str, Any]:
    """Write the quick-look figure (PNG and PDF) and its numbers (JSON)."""
    st = quicklook_stats(path, max_showers)
    geometry = st["geometry"]
    resp = response_vs_energy(st["e_inc"], st["e_sum"])
    hep.style.use("ROOT")
    plt.rcParams.update({"font.size": 14, "axes.labelsize": 16, "axes.titlesize": 16, "legend.fontsize": 13})
    fig, axes = plt.subplots(2, 2, figsize=(15, 12))
    unit = io.ENERGY_UNIT
    scale = "EM-scale" if geometry.energy_scale == "calibrated" else "visible"

    ax = axes[0, 0]
    mean_layer = st["mean_layer_energy_mev"]
    if st["layer_fraction_by_energy"] and geometry.n_layers <= 8:
        by_e = st["layer_fraction_by_energy"]
        for i, ly in enumerate(geometry.layers):
            es = sorted(by_e)
            ax.plot(np.asarray(es) / 1000, [100 * by_e[e][i] for e in es], "o-", label=ly.name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("$E_{inc}$ [GeV]")
        ax.set_ylabel("mean $E_{layer} / E_{inc}$ [%]")
        ax.legend(fontsize=12)
    else:
        hep.histplot(mean_layer, bins=np.arange(geometry.n_layers + 1), ax=ax, label="mean")
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_ylabel(f"mean {scale} energy per layer [{unit}]")
    ax.set_title("longitudinal profile")

    ax = axes[0, 1]
    for label, proj in st["projections"].items():
        if label == "r":
            edges = geometry.radial_edges
            density = proj / np.diff(edges)
            hep.histplot(np.maximum(density, 1e-12), bins=edges, ax=ax, label="r")
            ax.set_xlabel("r [mm]")
            ax.set_ylabel(f"mean energy per mm of r [{unit}/mm]")
        else:
            centre = (proj.shape[0] - 1) / 2
            bins = np.arange(proj.shape[0] + 1) - 0.5 - centre
            hep.histplot(np.maximum(proj, 1e-12), bins=bins, ax=ax, label=label)
            middle = " (middle layer)" if isinstance(geometry, AtlasEMBarrel) else ""
            ax.set_xlabel("cell offset from window centre" + middle)
            ax.set_ylabel(f"mean energy per cell column [{unit}]")
    ax.set_yscale("log")
    ax.legend(fontsize=14)
    ax.set_title("lateral profiles")

    ax = axes[1, 0]
    title = "response" if geometry.energy_scale == "calibrated" else "sampling fraction"
    if len(resp["energy_gev"]) >= 3:
        e = np.asarray(resp["energy_gev"])
        m = np.asarray(resp["mean"])
        sd = np.asarray(resp["std"])
        ax.fill_between(e, m - sd, m + sd, alpha=0.3, label="±1 std (resolution)")
        ax.errorbar(e, m, yerr=resp["err"], fmt="o", color="black", label="mean")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("$E_{inc}$ [GeV]")
        ax.set_ylabel("$E_{sum} / E_{inc}$")
    else:  # one or two beam energies: the distribution itself
        ratio = st["e_sum"] / st["e_inc"]
        counts, edges = np.histogram(ratio, bins=50)
        hep.histplot(
            counts,
            edges,
            ax=ax,
            yerr=True,
            histtype="errorbar",
            color="black",
            label=f"mean {ratio.mean():.4g}, rel. std {ratio.std() / ratio.mean():.3g}",
        )
        ax.set_xlabel("$E_{sum} / E_{inc}$")
        ax.set_ylabel("showers")
        title += f" at {', '.join(f'{x:g}' for x in resp['energy_gev'])} GeV"
    ax.legend()
    ax.set_title(title)

    ax = axes[1, 1]
    shower, e0 = st["example"]
    img, xlabel, ylabel = example_image(geometry, shower)
    pos = img[img > 0]
    norm = LogNorm(vmin=max(pos.min(), pos.max() * 1e-6), vmax=pos.max()) if pos.size else None
    im = ax.imshow(np.where(img > 0, img, np.nan).T, origin="lower", norm=norm, cmap="viridis")
    fig.colorbar(im, ax=ax, label=f"energy [{unit}]")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"example shower, $E_{{inc}}$ = {e0 / 1000:.1f} GeV")

    fig.suptitle(f"{dataset}: {geometry.name}, {st['attrs'].get('particle', '')}, {st['n']} showers")
    fig.tight_layout()
    for out in (out_png, out_pdf):
        save_figure(fig, out, dpi=100)
    plt.close(fig)

    numbers = {
        "dataset": dataset,
        "geometry": geometry.name,
        "n_showers": st["n"],
        "energy_unit": unit,
        "energy_scale": geometry.energy_scale,
        "mean_layer_energy_mev": [float(x) for x in mean_layer],
        "response_vs_energy": resp,
    }
    if st["layer_fraction_by_energy"]:
        numbers["layer_fraction_percent_by_energy_gev"] = {
            f"{e / 1000:g}": {ly.name: float(100 * v) for ly, v in zip(geometry.layers, fr)}
            for e, fr in sorted(st["layer_fraction_by_energy"].items())
        }
    write_json(out_json, numbers)
    return numbers


def _profile_stats(path, key: str, pipe=None, max_showers: int = 10_000, chunk: int = 256) -> dict[str, Any]:
    """E_inc, E_sum and mean layer profile [MeV] of a file, streamed in chunks.

    ``key`` is ``showers`` (canonical) or ``x`` (a preprocessed split, inverted with ``pipe``).
    """
    e, esum, prof, n = [], [], 0.0, 0
    for _, c in io.iter_chunks(path, chunk, (key, "energy"), stop=max_showers):
        energy = c["energy"].astype(np.float64)
        cells = (pipe.inverse(c[key], energy) if pipe is not None else c[key]).astype(np.float64)
        e.append(energy)
        esum.append(cells.reshape(len(cells), -1).sum(axis=1))
        prof = prof + cells.sum(axis=tuple(range(1, cells.ndim - 1))).sum(axis=0)
        n += len(cells)
    if n == 0:
        raise io.DataFormatError(f"{path}: no showers")
    return {"energy": np.concatenate(e), "esum": np.concatenate(esum), "profile": prof / n, "n": n}


def plot_comparison(
    reference_split: str | os.PathLike,
    transforms: str | os.PathLike,
    generated: str | os.PathLike,
    out_png: str | os.PathLike,
    out_pdf: str | os.PathLike,
    out_json: str | os.PathLike,
    label: str,
    max_showers: int = 10_000,
    n_bins: int = 5,
) -> dict[str, Any]:
    """Reference (a preprocessed split, inverted) vs generated: E_sum/E_p in energy bins
    and the mean longitudinal profile; writes PNG, PDF and the numbers (JSON)."""
    from calofast.data.preprocess import Pipeline
    from calofast.metrics.observables import energy_bins, sampling_fraction_score

    pipe = Pipeline.from_json(transforms)
    ref = _profile_stats(reference_split, "x", pipe, max_showers)
    gen = _profile_stats(generated, "showers", None, max_showers)
    edges = energy_bins(ref["energy"], n_bins)
    score = sampling_fraction_score(ref["energy"], ref["esum"], gen["energy"], gen["esum"], edges)
    hep.style.use("ROOT")
    plt.rcParams.update({"font.size": 14, "axes.labelsize": 16, "axes.titlesize": 16, "legend.fontsize": 13})
    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5))
    ax = axes[0]
    mids = [0.5 * (b["lo_gev"] + b["hi_gev"]) for b in score["bins"]]
    for key, name, style in (("sf_data", "reference (test split)", "o"), ("sf_gen", label, "s")):
        values = [b[key] for b in score["bins"]]
        n_key = "n_data" if key == "sf_data" else "n_gen"
        src = ref if key == "sf_data" else gen
        errs = []
        for b in score["bins"]:
            sel = (src["energy"] >= b["lo_gev"] * 1e3) & (src["energy"] < b["hi_gev"] * 1e3)
            sf = src["esum"][sel] / src["energy"][sel]
            errs.append(sf.std(ddof=1) / np.sqrt(b[n_key]) if b[n_key] > 1 else 0.0)
        ax.errorbar(mids, values, yerr=errs, fmt=style, label=name, color="black" if key == "sf_data" else None)
    ax.set_xlabel("$E_p$ [GeV]")
    ax.set_ylabel("$E_{sum} / E_p$")
    ax.set_title(f"sampling fraction; MRE = {score['score']:.3f} $\\pm$ {score['uncertainty']:.3f}")
    ax.legend()
    ax = axes[1]
    layers = np.arange(len(ref["profile"]) + 1)
    hep.histplot(
        ref["profile"],
        bins=layers,
        ax=ax,
        label="reference (test split)",
        color="black",
        histtype="errorbar",
        yerr=False,
    )
    hep.histplot(gen["profile"], bins=layers, ax=ax, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel(f"mean energy per layer [{io.ENERGY_UNIT}]")
    ax.set_title("longitudinal profile")
    ax.legend()
    fig.suptitle(f"{label} vs reference: {gen['n']} generated, {ref['n']} reference showers")
    fig.tight_layout()
    for out in (out_png, out_pdf):
        save_figure(fig, out, dpi=100)
    plt.close(fig)
    numbers = {
        "label": label,
        "n_reference": ref["n"],
        "n_generated": gen["n"],
        "sampling_fraction": score,
        "profile_reference_mev": ref["profile"].tolist(),
        "profile_generated_mev": gen["profile"].tolist(),
    }
    write_json(out_json, numbers)
    return numbers
