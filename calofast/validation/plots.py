"""Validation figures in HEP style: reference as black markers with error bars, the model as a
line with a hatched uncertainty band, a ratio panel below, log axes where the range needs it.
Every figure is written in each of ValidationConfig.figure_formats (PNG and PDF); empty bins are
left out and counted in the title."""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mplhep as hep  # noqa: E402
import numpy as np  # noqa: E402

from calofast.util.files import save_figure
from calofast.validation.engine import DEFAULT_FIGURE_FORMATS, SampleStats, merge  # noqa: E402
from calofast.validation.features import atlas_delta_bins, geometry_kind, log_bins  # noqa: E402

MODEL_COLOUR = "tab:red"


def _style() -> None:
    hep.style.use("ROOT")
    plt.rcParams.update({"font.size": 13, "axes.labelsize": 15, "axes.titlesize": 14, "legend.fontsize": 11})


def _logx(ax) -> None:
    """Log x axis without the overlapping minor tick labels."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())


#: the file formats of the figures being made (make_figures: ValidationConfig.figure_formats)
_FORMATS: ContextVar[tuple[str, ...]] = ContextVar("figure_formats", default=DEFAULT_FIGURE_FORMATS)


def _save(fig, out_dir: Path, name: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for ext in _FORMATS.get():
        save_figure(fig, out_dir / f"{name}.{ext}", dpi=90)
    plt.close(fig)


def _axes(n: int, ratio: bool = True, width: float = 5.2):
    """n columns of (main, ratio) axes."""
    if not ratio:
        fig, axes = plt.subplots(1, n, figsize=(width * n, 4.6), squeeze=False)
        return fig, axes[0], [None] * n
    fig, axes = plt.subplots(
        2,
        n,
        figsize=(width * n, 6.2),
        squeeze=False,
        sharex="col",
        gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05},
    )
    return fig, axes[0], axes[1]


def _draw(ax, rax, x, ref, ref_err, gen, gen_err, label, step=False):
    """Reference markers, model line + hatched band, ratio model/reference."""
    ok = np.isfinite(ref) & np.isfinite(gen)
    x, ref, ref_err, gen, gen_err = (np.asarray(a, dtype=float)[ok] for a in (x, ref, ref_err, gen, gen_err))
    ax.errorbar(x, ref, yerr=np.nan_to_num(ref_err), fmt="o", color="black", ms=4, label="reference")
    draw = ax.step if step else ax.plot
    kw = {"where": "mid"} if step else {}
    draw(x, gen, color=MODEL_COLOUR, label=label, **kw)
    ax.fill_between(
        x,
        gen - np.nan_to_num(gen_err),
        gen + np.nan_to_num(gen_err),
        hatch="///",
        facecolor="none",
        edgecolor=MODEL_COLOUR,
        linewidth=0,
        step="mid" if step else None,
    )
    if rax is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            r = gen / ref
            rerr = np.abs(r) * np.sqrt((np.nan_to_num(gen_err) / gen) ** 2 + (np.nan_to_num(ref_err) / ref) ** 2)
            band = np.nan_to_num(ref_err) / np.abs(ref)
        rax.fill_between(x, 1 - band, 1 + band, color="0.8", step="mid" if step else None)
        rax.errorbar(x, r, yerr=np.nan_to_num(rerr), fmt="s", color=MODEL_COLOUR, ms=3)
        rax.axhline(1.0, color="black", lw=0.8)
        finite = r[np.isfinite(r)]
        if finite.size:
            lo, hi = np.percentile(finite, [5, 95])
            rax.set_ylim(min(0.8, lo - 0.05), max(1.2, hi + 0.05))
        rax.set_ylabel(f"{label}/ref.")


def _with_err(stats: SampleStats, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value, bootstrap std) along the replica axis 0."""
    with np.errstate(invalid="ignore"):
        return arr[0], np.nanstd(arr[1:], axis=0, ddof=1)


def _energy_centres(ref: SampleStats) -> np.ndarray:
    return ref.mean("e_p")[0, :, -1]


def _title(ax, text: str, ref: SampleStats, gen: SampleStats) -> None:
    empty = int(((ref.bins_count()[:, -1] < 2) | (gen.bins_count()[:, -1] < 2)).sum())
    ax.set_title(text + (f" ({empty} empty energy bin{'s' if empty != 1 else ''})" if empty else ""))


def feature_vs_energy(
    ref: SampleStats,
    gen: SampleStats,
    keys: list[str],
    labels: dict[str, str],
    label: str,
    out_dir: Path,
    name: str,
    t: int = -1,
    logx: bool = True,
) -> None:
    keys = [k for k in keys if k in ref.feature_keys]
    if not keys:
        return
    fig, axes, raxes = _axes(len(keys))
    x = _energy_centres(ref)
    for ax, rax, key in zip(axes, raxes, keys):
        rv, re = _with_err(ref, ref.mean(key)[:, :, t])
        gv, ge = _with_err(gen, gen.mean(key)[:, :, t])
        _draw(ax, rax, x, rv, re, gv, ge, label)
        ax.set_ylabel(labels.get(key, key))
        _title(ax, labels.get(key, key), ref, gen)
        (rax or ax).set_xlabel("$E_p$ [GeV]")
        if logx:
            _logx(ax)
    axes[0].legend()
    fig.align_ylabels()
    _save(fig, out_dir, name)


LABELS = {
    "sf": "$E_{sum}/E_p$",
    "e_sum": "$E_{sum}$ [MeV]",
    "hits": "hits above threshold",
    "r1": "$R_1$ (first third)",
    "r2": "$R_2$ (middle third)",
    "r3": "$R_3$ (last third)",
    "depth_x0": "shower depth [$X_0$]",
    "angle_measured_deg": r"measured $\theta$ [deg]",
}
for _axis in ("x", "y", "z", "eta", "phi", "r", "layer"):
    LABELS[f"m1_{_axis}"] = f"$M_1$ ({_axis}) [cells]"
    LABELS[f"m2_{_axis}"] = f"$M_2$ ({_axis})"
    LABELS[f"m3_{_axis}"] = f"$M_3$ ({_axis})"
    LABELS[f"m4_{_axis}"] = f"$M_4$ ({_axis})"
    LABELS[f"width_{_axis}"] = f"width ({_axis})"
# ATLAS middle layer: energy-weighted delta from the impact point (eta units, rad)
LABELS.update(
    {
        "m1_eta": r"middle $\langle\Delta\eta\rangle$",
        "width_eta": r"middle width in $\eta$",
        "m1_phi": r"middle $\langle\Delta\phi\rangle$ [rad]",
        "width_phi": r"middle width in $\phi$ [rad]",
        "e_presampler": "$E$ presampler [MeV]",
        "e_front": "$E$ front [MeV]",
        "e_middle": "$E$ middle [MeV]",
        "e_back": "$E$ back [MeV]",
    }
)
for _layer in ("presampler", "front", "middle", "back"):
    LABELS[f"frac_{_layer}"] = f"$E_{{{_layer}}}/E_{{sum}}$"


def make_figures(
    ref_a: SampleStats,
    ref_b: SampleStats,
    gen: SampleStats,
    rows: list[dict[str, Any]],
    out_dir: Path,
    label: str,
    formats: tuple[str, ...] = DEFAULT_FIGURE_FORMATS,
) -> list[Path]:
    """All validation figures of one model into ``out_dir``, one file per format each."""
    token = _FORMATS.set(tuple(formats))
    try:
        return _make_figures(ref_a, ref_b, gen, rows, out_dir, label)
    finally:
        _FORMATS.reset(token)


def _make_figures(
    ref_a: SampleStats, ref_b: SampleStats, gen: SampleStats, rows: list[dict[str, Any]], out_dir: Path, label: str
) -> list[Path]:
    _style()
    ref = merge(ref_a, ref_b)
    b = ref.binning
    # sampling fraction per angle bin, response and resolution
    t_list = list(range(b.n_t)) + [b.n_t]
    fig, axes, raxes = _axes(len(t_list))
    x = _energy_centres(ref)
    for ax, rax, t in zip(axes, raxes, t_list):
        rv, re = _with_err(ref, ref.mean("sf")[:, :, t])
        gv, ge = _with_err(gen, gen.mean("sf")[:, :, t])
        _draw(ax, rax, x, rv, re, gv, ge, label)
        _logx(ax)
        (rax or ax).set_xlabel("$E_p$ [GeV]")
        ax.set_ylabel(LABELS["sf"])
        ax.set_title("all angles" if t == b.n_t else rf"$\theta$ {b.theta_edges[t]:.0f}-{b.theta_edges[t + 1]:.0f} deg")
    axes[0].legend()
    _save(fig, out_dir, "sampling_fraction")

    fig, axes, raxes = _axes(2)
    for ax, rax, what in zip(axes, raxes, ("mean", "resolution")):
        if what == "mean":
            rv, re = _with_err(ref, ref.mean("sf")[:, :, -1])
            gv, ge = _with_err(gen, gen.mean("sf")[:, :, -1])
            ax.set_ylabel("response $E_{sum}/E_p$")
        else:
            rv, re = _with_err(ref, ref.std("sf")[:, :, -1] / ref.mean("sf")[:, :, -1])
            gv, ge = _with_err(gen, gen.std("sf")[:, :, -1] / gen.mean("sf")[:, :, -1])
            ax.set_ylabel(r"resolution $\sigma/\mu$ of $E_{sum}/E_p$")
        _draw(ax, rax, x, rv, re, gv, ge, label)
        _logx(ax)
        (rax or ax).set_xlabel("$E_p$ [GeV]")
    axes[0].legend()
    _save(fig, out_dir, "response_resolution")

    # profiles over all energies (linear and log) and per energy bin (the ATLAS delta-eta /
    # delta-phi profiles have their own figure)
    keys = [k for k in ref.profile_sums if not k.startswith(("deta_", "dphi_"))]
    for scale in ("linear", "log"):
        fig, axes, raxes = _axes(len(keys))
        for ax, rax, key in zip(axes, raxes, keys):
            r_all = _all_energy_profile(ref, key)
            g_all = _all_energy_profile(gen, key)
            rv, re = _with_err(ref, r_all)
            gv, ge = _with_err(gen, g_all)
            xs = np.arange(len(rv))
            _draw(ax, rax, xs, rv, re, gv, ge, label, step=True)
            if scale == "log":
                ax.set_yscale("log")
            ax.set_ylabel("mean energy [MeV]")
            (rax or ax).set_xlabel(f"{key} bin")
            ax.set_title(f"profile along {key} (all energies)")
        axes[0].legend()
        _save(fig, out_dir, f"profiles_{scale}")
    long_key = "z" if "z" in keys else keys[0]
    fig, axes, raxes = _axes(b.n_e, width=4.2)
    pr, pg = ref.profile(long_key), gen.profile(long_key)
    for e, (ax, rax) in enumerate(zip(axes, raxes)):
        rv, re = _with_err(ref, pr[:, e, -1])
        gv, ge = _with_err(gen, pg[:, e, -1])
        _draw(ax, rax, np.arange(len(rv)), rv, re, gv, ge, label, step=True)
        ax.set_yscale("log")
        ax.set_title(f"$E_p$ {b.energy_edges[e] / 1e3:.3g}-{b.energy_edges[e + 1] / 1e3:.3g} GeV")
        (rax or ax).set_xlabel(f"{long_key} bin")
    axes[0].set_ylabel("mean energy [MeV]")
    axes[0].legend()
    _save(fig, out_dir, "longitudinal_by_energy")

    # moments, widths, ratios, hits
    for axis in ("x", "y", "z", "eta", "phi", "r", "layer"):
        feature_vs_energy(ref, gen, [f"m{k}_{axis}" for k in range(1, 5)], LABELS, label, out_dir, f"moments_{axis}")
    feature_vs_energy(ref, gen, ["r1", "r2", "r3"], LABELS, label, out_dir, "layer_ratios")
    feature_vs_energy(ref, gen, ["hits", "e_sum", "depth_x0"], LABELS, label, out_dir, "hits_energy")
    feature_vs_energy(
        ref, gen, [k for k in ref.feature_keys if k.startswith("frac_")], LABELS, label, out_dir, "layer_fractions"
    )
    feature_vs_energy(
        ref, gen, [k for k in ref.feature_keys if k.startswith("width_")], LABELS, label, out_dir, "widths"
    )

    if geometry_kind(ref.geometry) == "atlas":
        _atlas_figures(ref, gen, rows, out_dir, label)

    # cells: spectrum, sparsity, MSCN
    fig, axes, raxes = _axes(3)
    cfg = ref.cfg
    edges = log_bins(*cfg.cell_spectrum_mev)
    centres = np.sqrt(edges[1:] * edges[:-1])
    rs, gs = ref.spectrum / ref.weight_total[:, None], gen.spectrum / gen.weight_total[:, None]
    _draw(axes[0], raxes[0], centres, *_with_err(ref, rs), *_with_err(gen, gs), label, step=True)
    _logx(axes[0])
    axes[0].set_yscale("log")
    axes[0].set_ylabel("cells per shower")
    raxes[0].set_xlabel("cell energy [MeV]")
    axes[0].set_title("cell-energy spectrum")
    rsp, gsp = ref.sparsity / ref.weight_total[:, None], gen.sparsity / gen.weight_total[:, None]
    _draw(axes[1], raxes[1], edges[:-1], *_with_err(ref, rsp), *_with_err(gen, gsp), label)
    _logx(axes[1])
    axes[1].set_yscale("log")
    axes[1].set_ylabel("fraction of cells above threshold")
    raxes[1].set_xlabel("threshold [MeV]")
    axes[1].set_title("sparsity vs threshold")
    medges = np.linspace(*cfg.mscn_range[:2], cfg.mscn_range[2] + 1)
    rm = ref.mscn_hist / np.maximum(ref.mscn_hist.sum(axis=1, keepdims=True), 1)
    gm = gen.mscn_hist / np.maximum(gen.mscn_hist.sum(axis=1, keepdims=True), 1)
    jsd = next((r for r in rows if r["observable"] == "mscn"), {})
    _draw(
        axes[2], raxes[2], 0.5 * (medges[1:] + medges[:-1]), *_with_err(ref, rm), *_with_err(gen, gm), label, step=True
    )
    axes[2].set_yscale("log")
    axes[2].set_ylabel("fraction of non-zero cells")
    raxes[2].set_xlabel("MSCN coefficient")
    value = jsd.get("value")
    axes[2].set_title("MSCN" + (f", JSD {value:.3f}" if value is not None else ""))
    axes[0].legend()
    _save(fig, out_dir, "cells")

    # measured vs true angle
    if "angle_measured_deg" in ref.feature_keys and b.n_t:
        fig, axes, raxes = _axes(1)
        xs = 0.5 * (b.theta_edges[1:] + b.theta_edges[:-1])
        rv, re = _with_err(ref, _all_energy_mean(ref, "angle_measured_deg")[:, :-1])
        gv, ge = _with_err(gen, _all_energy_mean(gen, "angle_measured_deg")[:, :-1])
        _draw(axes[0], raxes[0], xs, rv, re, gv, ge, label)
        axes[0].plot(xs, xs, ls=":", color="0.5", label="measured = true")
        axes[0].set_ylabel(r"mean measured $\theta$ [deg]")
        raxes[0].set_xlabel(r"true $\theta$ [deg]")
        axes[0].legend()
        _save(fig, out_dir, "angle")

    # correlations
    keys = [k for k in ref.corr_keys if k in gen.corr_keys]  # the features both have
    cr, cg = ref.correlation(keys)[0], gen.correlation(keys)[0]
    fig, axes = plt.subplots(1, 3, figsize=(19, 6))
    for ax, mat, title, cmap, lim in (
        (axes[0], cr, "reference", "RdBu_r", 1),
        (axes[1], cg, label, "RdBu_r", 1),
        (axes[2], cg - cr, f"{label} - reference", "PiYG", 1),
    ):
        im = ax.imshow(mat, cmap=cmap, vmin=-lim, vmax=lim)
        ax.set_xticks(range(len(keys)), keys, rotation=90, fontsize=9)
        ax.set_yticks(range(len(keys)), keys, fontsize=9)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046)
    gw = next((r for r in rows if r["observable"] == "correlation" and "Gromov" in r["detail"]), {})
    if gw.get("value") is not None:
        fig.suptitle(
            f"correlation matrices; entropic Gromov-Wasserstein discrepancy {gw['value']:.3g} "
            f"(reference halves: {gw['baseline']:.3g})"
        )
    fig.tight_layout()
    _save(fig, out_dir, "correlations")

    # SSIM
    ssim = [r for r in rows if r["observable"].startswith("ssim_") and r["status"] == "ok"]
    if ssim:
        planes = sorted({r["observable"] for r in ssim})
        ranges = sorted({r["data_range"] for r in ssim}, reverse=True)
        fig, axes = plt.subplots(len(ranges), len(planes), figsize=(5 * len(planes), 4 * len(ranges)), squeeze=False)
        for i, L in enumerate(ranges):
            for j, plane in enumerate(planes):
                sel = [r for r in ssim if r["observable"] == plane and r["data_range"] == L]
                xs = [np.sqrt(r["e_lo_gev"] * r["e_hi_gev"]) for r in sel]
                ax = axes[i, j]
                ax.errorbar(
                    xs,
                    [r["baseline"] for r in sel],
                    yerr=[r["baseline_uncertainty"] or 0 for r in sel],
                    fmt="o",
                    color="black",
                    label="ref vs ref",
                )
                ax.errorbar(
                    xs,
                    [r["value"] for r in sel],
                    yerr=[r["uncertainty"] or 0 for r in sel],
                    fmt="s",
                    color=MODEL_COLOUR,
                    label=f"ref vs {label}",
                )
                ax.plot(xs, [r["gen_vs_gen"] for r in sel], "^--", color="tab:purple", label=f"{label} vs {label}")
                _logx(ax)
                ax.set_title(f"{plane[5:]} projection, L = {L:g}")
                ax.set_xlabel("$E_p$ [GeV]")
                ax.set_ylabel("SSIM")
        axes[0, 0].legend()
        fig.tight_layout()
        _save(fig, out_dir, "ssim")

    # KS distances and headline metrics vs baseline
    ks = [r for r in rows if r["observable"].startswith("ks_") and r["status"] == "ok"]
    if ks:
        fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(ks)), 5))
        xs = np.arange(len(ks))
        ax.bar(
            xs - 0.2,
            [r["value"] for r in ks],
            0.4,
            yerr=[r["uncertainty"] or 0 for r in ks],
            color=MODEL_COLOUR,
            label=f"{label} vs reference",
        )
        ax.bar(
            xs + 0.2,
            [r["baseline"] for r in ks],
            0.4,
            yerr=[r["baseline_uncertainty"] or 0 for r in ks],
            color="0.5",
            label="reference halves",
        )
        ax.set_xticks(xs, [r["observable"][3:] for r in ks], rotation=90)
        ax.set_ylabel("two-sample KS distance")
        ax.legend()
        fig.tight_layout()
        _save(fig, out_dir, "ks_distances")
    return sorted(out_dir.glob("*.png"))


def _atlas_figures(ref: SampleStats, gen: SampleStats, rows: list[dict[str, Any]], out_dir: Path, label: str) -> None:
    """Paper 001's observables: per-layer energy distributions per E_gamma, the middle layer's
    delta-eta / delta-phi centre and width vs E_gamma, the per-layer mean energy vs delta-eta
    and delta-phi from the impact point (bin width = the layer's cell width) and the cell
    covariance matrices with their difference."""
    b = ref.binning
    layers = [ly.name for ly in ref.geometry.layers]
    feature_vs_energy(
        ref, gen, ["m1_eta", "width_eta", "m1_phi", "width_phi"], LABELS, label, out_dir, "middle_eta_phi"
    )

    # energy distributions per layer (and E_sum / E_gamma) in four energy bins: the lowest, the
    # highest, the one holding 65 GeV (the paper's showcase energy) and one between
    centres = b.energy_edges[:-1] / 2e3 + b.energy_edges[1:] / 2e3
    near65 = int(np.argmin(np.abs(np.log(centres / 65.5))))
    rows_e = sorted({0, b.n_e - 1, near65, max(1, near65 // 2)} & set(range(b.n_e)))
    keys = [f"e_{n}" for n in layers] + ["sf"]
    fig, axes = plt.subplots(len(rows_e), len(keys), figsize=(4.2 * len(keys), 3.0 * len(rows_e)), squeeze=False)
    for row, e in enumerate(rows_e):
        lo, hi = b.energy_edges[e] / 1e3, b.energy_edges[e + 1] / 1e3
        sel_r = (ref.reservoir["e_p"] >= lo) & (ref.reservoir["e_p"] <= hi)
        sel_g = (gen.reservoir["e_p"] >= lo) & (gen.reservoir["e_p"] <= hi)
        for ax, key in zip(axes[row], keys):
            r, g = ref.reservoir[key][sel_r], gen.reservoir[key][sel_g]
            both = np.concatenate([r, g])
            if r.size < 2 or g.size < 2 or not np.isfinite(both).all():
                ax.set_axis_off()
                continue
            edges = np.histogram_bin_edges(
                r, bins=30, range=(min(both.min(), r.min()), max(both.max(), r.max()) + 1e-12)
            )
            hr, _ = np.histogram(r, edges)
            hg, _ = np.histogram(np.clip(g, edges[0], edges[-1]), edges)  # overflow into the last bins
            centres = 0.5 * (edges[1:] + edges[:-1])
            ax.errorbar(
                centres, hr / r.size, yerr=np.sqrt(hr) / r.size, fmt="o", ms=3, color="black", label="reference"
            )
            ax.stairs(hg / g.size, edges, color=MODEL_COLOUR, label=label)
            ax.set_title(f"{LABELS.get(key, key)}, {lo:.3g}-{hi:.3g} GeV", fontsize=10)
            ax.tick_params(labelsize=8)
    axes[0, 0].legend(fontsize=8)
    _fast_layout(fig, axes)
    _save(fig, out_dir, "layer_energies")

    # mean energy vs delta-eta and delta-phi from the impact point, per layer, all energies
    edges = atlas_delta_bins(ref.geometry)
    if all(f"deta_{n}" in ref.profile_sums for n in layers):
        fig, axes = plt.subplots(2, len(layers), figsize=(4.6 * len(layers), 7.6), squeeze=False)
        for j, axis in enumerate(("eta", "phi")):
            for i, name in enumerate(layers):
                key = f"d{axis}_{name}"
                rv, re = _with_err(ref, _all_energy_profile(ref, key))
                gv, ge = _with_err(gen, _all_energy_profile(gen, key))
                e = edges[key]
                x = 0.5 * (e[1:] + e[:-1])
                ax = axes[j, i]
                ax.errorbar(x, rv, yerr=np.nan_to_num(re), fmt="o", ms=3, color="black", label="reference")
                ax.stairs(gv, e, color=MODEL_COLOUR, label=label)
                ax.set_yscale("log")
                ax.set_xlabel(rf"$\Delta\{axis}$ from the impact point" + (" [rad]" if axis == "phi" else ""))
                ax.set_title(f"{name} (bin = cell width)", fontsize=11)
                ax.tick_params(labelsize=8)
        axes[0, 0].set_ylabel("mean energy [MeV]")
        axes[1, 0].set_ylabel("mean energy [MeV]")
        axes[0, 0].legend(fontsize=9)
        _fast_layout(fig, axes)
        _save(fig, out_dir, "delta_eta_phi_profiles")

    # the 266 x 266 cell covariance: reference, model, difference
    if ref.cov is not None and gen.cov is not None and gen.cov.n > 1:
        cr, cg = ref.cov.covariance(), gen.cov.covariance()
        scale = float(np.abs(cr).max()) or 1.0
        dist = next((r for r in rows if r["observable"] == "cell_covariance"), {})
        fig, axes = plt.subplots(1, 3, figsize=(19, 6))
        bounds = np.cumsum([0] + [sl.stop - sl.start for sl in ref.geometry.layer_slices])
        for ax, mat, title, cmap in (
            (axes[0], cr / scale, "reference", "RdBu_r"),
            (axes[1], cg / scale, label, "RdBu_r"),
            (axes[2], (cg - cr) / scale, f"{label} - reference", "PiYG"),
        ):
            im = ax.imshow(mat, cmap=cmap, vmin=-0.2, vmax=0.2, interpolation="nearest")
            for x in bounds[1:-1]:
                ax.axhline(x - 0.5, color="0.4", lw=0.5)
                ax.axvline(x - 0.5, color="0.4", lw=0.5)
            ax.set_title(title)
            ax.set_xlabel("cell")
            fig.colorbar(im, ax=ax, fraction=0.046, label=r"covariance / max$|C_{ref}|$")
        if dist.get("value") is not None:
            fig.suptitle(
                rf"cell covariance [MeV$^2$], layers presampler|front|middle|back; "
                rf"$\|C_{{gen}}-C_{{ref}}\|_F/\|C_{{ref}}\|_F$ = {dist['value']:.3g} "
                f"(reference halves: {dist['baseline']:.3g})"
            )
        _fast_layout(fig, axes[None, :], hspace=0.2, wspace=0.35)
        _save(fig, out_dir, "cell_covariance")


def _fast_layout(fig, axes, hspace: float = 0.45, wspace: float = 0.3) -> None:
    """Fixed margins and no minor ticks: many-panel figures in a fraction of tight_layout's time."""
    for ax in np.ravel(axes):
        ax.minorticks_off()
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.92, hspace=hspace, wspace=wspace)


def _all_energy_profile(stats: SampleStats, key: str) -> np.ndarray:
    """(B + 1, L) mean profile over all energy bins and angles."""
    b = stats.binning
    sums = stats.profile_sums[key].reshape(stats.profile_sums[key].shape[0], b.n_e, b.n_t + 1, -1)[:, :, -1].sum(1)
    counts = stats.counts.reshape(stats.counts.shape[0], b.n_e, b.n_t + 1)[:, :, -1].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def _all_energy_mean(stats: SampleStats, key: str) -> np.ndarray:
    """(B + 1, n_t + 1) mean of a feature per angle bin, all energies together."""
    b = stats.binning
    f = stats.feature_keys.index(key)
    sums = stats.f1[..., f].reshape(-1, b.n_e, b.n_t + 1).sum(1)
    counts = stats.counts.reshape(-1, b.n_e, b.n_t + 1).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def energy_table_figure(samples: dict[str, list[dict]], layer_names: list[str], out_dir: Path, tol) -> None:
    """Mean layer fractions, response and resolution vs incident energy: the reference as black
    markers, every model as a coloured line, each with its standard error; the grey band is the
    tolerance around the reference (:class:`calofast.selection.Tolerances`)."""
    _style()
    panels = [(f"{name} fraction [%]", i) for i, name in enumerate(layer_names)]
    panels += [(r"response $E_{sum}/E_{inc}$", "response"), (r"resolution $\sigma/\mu$", "resolution")]
    ncol = 3
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 4.2 * nrow), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (ylabel, key) in zip(axes.flat, panels):
        for j, (sample, summ) in enumerate(samples.items()):
            e = np.array([s["energy"] for s in summ]) / 1e3
            if isinstance(key, int):
                y = np.array([s["fractions"][key] for s in summ])
                err = np.array([s["fractions_err"][key] for s in summ])
            else:
                y = np.array([s[key] for s in summ])
                err = np.array([s[f"{key}_err"] for s in summ])
            if sample == "reference":
                scale = np.array([tol.scale(x) for x in e])
                if isinstance(key, int):
                    half = tol.fraction_points * scale
                else:
                    half = y * (tol.response if key == "response" else tol.resolution) * scale
                ax.fill_between(e, np.maximum(y - half, 0.0), y + half, color="0.85", label="target band")
                ax.errorbar(e, y, yerr=err, fmt="o", color="black", label="reference", zorder=5)
            else:
                colour = colours[(j - 1) % len(colours)]
                ax.errorbar(e, y, yerr=err, fmt="-s", ms=4, color=colour, label=sample, zorder=4)
        _logx(ax)
        if key == "resolution":
            ax.set_yscale("log")
        ax.set_xlabel(r"$E_{inc}$ [GeV]")
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    axes.flat[0].legend(loc="best", fontsize=10)
    _fast_layout(fig, axes)
    _save(fig, out_dir, "layer_fractions_vs_energy")
