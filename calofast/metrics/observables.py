"""Physics observables shared by the models (as differentiable constraints) and validation.

* :func:`measured_angle` - the 3DGAN incidence-angle estimate (paper 000, Sec. III-B):
  the energy barycentre of the shower and of every layer (cell coordinates at
  index + 0.5), the slope of the line from the shower barycentre to each layer
  barycentre projected on the tilt axis y, per-layer angles pi/2 - arctan(slope)
  averaged over the layers with energy, weighted by their depth coordinate.
* :func:`sampling_fraction_score` - the epoch-selection metric (paper 000,
  Sec. V-F2): mean over energy bins of |<SF>_gen - <SF>_data| / <SF>_data with
  SF = E_sum / E_p.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: Value of the measured angle for an empty shower (as in the reference implementation).
EMPTY_ANGLE = 100.0


def measured_angle(
    images: torch.Tensor,
    z_coords: torch.Tensor | None = None,
    layer_threshold: float = 0.0,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Measured incidence angle [rad] of showers ``images`` (N, X, Y, Z) in energy units.

    ``z_coords`` gives the depth of each layer in cell widths (default index +
    0.5, the reference convention); pass physical layer positions / cell width
    for calorimeters whose layer pitch differs from the cell size.  Layers with
    energy <= ``layer_threshold`` are ignored.  Empty showers give
    :data:`EMPTY_ANGLE`.  Differentiable; no NaN in values or gradients.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, X, Y, Z), got shape {tuple(images.shape)}")
    n, nx, ny, nz = images.shape
    dtype, device = images.dtype, images.device
    x = torch.arange(nx, dtype=dtype, device=device) + 0.5
    y = torch.arange(ny, dtype=dtype, device=device) + 0.5
    z = (
        torch.arange(nz, dtype=dtype, device=device) + 0.5
        if z_coords is None
        else z_coords.to(dtype=dtype, device=device)
    )

    total = images.sum(dim=(1, 2, 3))  # (N,)
    empty = total <= 0
    safe_total = torch.where(empty, torch.ones_like(total), total)
    proj_x = images.sum(dim=(2, 3))  # (N, X)
    proj_y = images.sum(dim=(1, 3))  # (N, Y)
    per_layer = images.sum(dim=(1, 2))  # (N, Z)
    x_ref = torch.where(empty, torch.ones_like(total), (proj_x * x).sum(1) / safe_total)
    y_ref = torch.where(empty, torch.ones_like(total), (proj_y * y).sum(1) / safe_total)
    z_ref = torch.where(empty, torch.ones_like(total), (per_layer * z).sum(1) / safe_total)

    has = per_layer > layer_threshold  # (N, Z)
    safe_layer = torch.where(has, per_layer, torch.ones_like(per_layer))
    x_mid = torch.where(has, (images.sum(dim=2) * x[None, :, None]).sum(1) / safe_layer, torch.zeros_like(per_layer))
    y_mid = torch.where(has, (images.sum(dim=1) * y[None, :, None]).sum(1) / safe_layer, torch.zeros_like(per_layer))

    dz = z[None, :] - z_ref[:, None]
    zproj = torch.sqrt(torch.clamp((x_mid - x_ref[:, None]) ** 2 + dz**2, min=eps))
    slope = (y_mid - y_ref[:, None]) / zproj
    slope = torch.where(dz < 0, -slope, slope)
    angle = math.pi / 2 - torch.atan(slope)
    weight = z[None, :] * has.to(dtype)
    wsum = weight.sum(1)
    mean = (angle * weight).sum(1) / torch.where(wsum > 0, wsum, torch.ones_like(wsum))
    return torch.where(empty | (wsum <= 0), torch.full_like(mean, EMPTY_ANGLE), mean)


def measured_angle_np(images: np.ndarray, **kwargs) -> np.ndarray:
    """:func:`measured_angle` for numpy arrays (float64)."""
    with torch.no_grad():
        return measured_angle(torch.as_tensor(np.asarray(images, dtype=np.float64)), **kwargs).numpy()


#: Samples with at most this many distinct incident energies are binned per energy.
DISCRETE_MAX = 16


def energy_bins(energies: np.ndarray, n_bins: int = 5, edges: list[float] | None = None) -> np.ndarray:
    """Bin edges in energy: explicit ``edges``; one bin per energy for discrete samples (at
    most ``n_bins`` distinct energies, or at most ``DISCRETE_MAX`` each repeated 4 times on
    average, as ATLAS's nine); else ``n_bins`` equal-population bins."""
    if edges is not None:
        return np.asarray(edges, dtype=np.float64)
    values = np.unique(energies)
    discrete = values.size <= n_bins or (values.size <= DISCRETE_MAX and len(energies) >= 4 * values.size)
    if discrete:  # one bin each
        mids = 0.5 * (values[1:] + values[:-1])
        return np.concatenate([[values[0] * 0.999], mids, [values[-1] * 1.001]])
    q = np.quantile(energies, np.linspace(0.0, 1.0, n_bins + 1))
    q[0], q[-1] = q[0] * 0.999, q[-1] * 1.001
    return q


def sampling_fraction_score(
    e_data: np.ndarray,
    esum_data: np.ndarray,
    e_gen: np.ndarray,
    esum_gen: np.ndarray,
    edges: np.ndarray,
) -> dict[str, object]:
    """Mean relative error of the sampling fraction over energy bins (selection metric).

    Returns the score, its statistical uncertainty and the per-bin values.
    Bins without data or without generated showers are skipped and counted.
    """
    sf_d, sf_g = esum_data / e_data, esum_gen / e_gen
    idx_d = np.digitize(e_data, edges) - 1
    idx_g = np.digitize(e_gen, edges) - 1
    rows, skipped = [], 0
    for b in range(len(edges) - 1):
        d, g = sf_d[idx_d == b], sf_g[idx_g == b]
        if d.size < 2 or g.size < 2:
            skipped += 1
            continue
        md, mg = d.mean(), g.mean()
        rel = abs(mg - md) / md
        err = math.sqrt((g.std(ddof=1) ** 2 / g.size) + (mg / md) ** 2 * (d.std(ddof=1) ** 2 / d.size)) / md
        rows.append(
            {
                "lo_gev": edges[b] / 1e3,
                "hi_gev": edges[b + 1] / 1e3,
                "sf_data": float(md),
                "sf_gen": float(mg),
                "rel_error": float(rel),
                "uncertainty": float(err),
                "n_data": int(d.size),
                "n_gen": int(g.size),
            }
        )
    if not rows:
        raise ValueError("no energy bin holds both data and generated showers; cannot score")
    score = float(np.mean([r["rel_error"] for r in rows]))
    unc = float(math.sqrt(sum(r["uncertainty"] ** 2 for r in rows)) / len(rows))
    return {"score": score, "uncertainty": unc, "bins": rows, "skipped_bins": skipped}
