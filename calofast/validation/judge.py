"""The independent judge: networks trained by the validation, never by the generative model.

* a classifier of reference vs generated showers on high-level features
  (scikit-learn gradient boosting) and one on the voxels (a small torch MLP on
  sum-pooled voxels as energy fractions and log energies), both with stratified k-fold cross-validation on
  balanced, independent samples: the ROC AUC and its spread over the folds
  (0.5 = indistinguishable);
* an energy regressor trained on reference showers (out-of-fold predictions
  for the reference itself) and applied to the generated ones: relative bias and
  resolution of E_p for both.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler

from calofast.data import io
from calofast.geometry import Geometry, GridCalorimeter, file_geometry
from calofast.util.files import save_figure, write_json
from calofast.validation.features import shower_features
from calofast.validation.run import iter_showers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgeConfig:
    """Settings of the judge networks (config ``judge``)."""

    folds: int = 5
    max_showers: int = 10_000  # per class
    seed: int = 1
    hit_threshold_mev: float | None = None  # None: the geometry's half a MIP
    gbdt_max_iter: int = 200
    net_hidden: int = 128
    net_epochs: int = 30
    net_patience: int = 5  # epochs without a better validation loss before stopping
    net_batch: int = 256
    net_lr: float = 1e-3
    net_max_inputs: int = 2000  # voxels are sum-pooled down to at most this many inputs


def pool_factors(shape: tuple[int, ...], max_inputs: int) -> tuple[int, ...]:
    """Per-axis sum-pooling factors (divisors of each axis) giving at most ``max_inputs`` voxels."""
    factors = [1] * len(shape)
    while int(np.prod([s // f for s, f in zip(shape, factors)])) > max_inputs:
        # grow the factor of the axis with the most remaining cells, to its next divisor
        i = int(np.argmax([s // f for s, f in zip(shape, factors)]))
        f = factors[i] + 1
        while shape[i] % f:
            f += 1
        factors[i] = f
    return tuple(factors)


def _pool(cells: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    shape = cells.shape[1:]
    new = [cells.shape[0]]
    for n, f in zip(shape, factors):
        new += [n // f, f]
    return cells.reshape(new).sum(axis=tuple(range(2, len(new), 2))).reshape(cells.shape[0], -1)


def load_sample(
    path, transforms, geometry: Geometry, cfg: JudgeConfig, factors: tuple[int, ...], limit: int
) -> dict[str, np.ndarray]:
    """High-level features, pooled log voxels and energies of the first ``limit`` showers."""
    feats: dict[str, list] = {}
    vox, energy = [], []
    for _, cells, e, theta, impact in iter_showers(path, 512, transforms, limit):
        f = shower_features(cells, e, theta, geometry, cfg.hit_threshold_mev, impact=impact)
        for k, v in f.items():
            feats.setdefault(k, []).append(v)
        pooled = np.maximum(_pool(cells.astype(np.float64), factors), 0.0)
        # linear energy fractions (the sum the net can learn linearly) and log energies (the shape)
        vox.append(np.hstack([pooled / e[:, None], np.log1p(pooled)]).astype(np.float32))
        energy.append(e)
    if not energy:
        raise ValueError(f"{path}: no showers")
    return {
        "features": {k: np.concatenate(v) for k, v in feats.items()},
        "voxels": np.concatenate(vox),
        "energy": np.concatenate(energy),
    }


def _matrix(feats: dict[str, np.ndarray], keys: list[str]) -> np.ndarray:
    return np.nan_to_num(np.stack([feats[k] for k in keys], axis=1))


def classifier_auc_hlf(x_ref: np.ndarray, x_gen: np.ndarray, cfg: JudgeConfig) -> dict[str, Any]:
    """k-fold AUC of gradient boosting separating the two feature samples (balanced)."""
    x = np.vstack([x_ref, x_gen])
    y = np.concatenate([np.zeros(len(x_ref)), np.ones(len(x_gen))])
    aucs, scores = [], np.zeros(len(y))
    for train, test in StratifiedKFold(cfg.folds, shuffle=True, random_state=cfg.seed).split(x, y):
        # early stopping on an inner validation fraction: no learning from noise (no AUC < 0.5 bias)
        clf = HistGradientBoostingClassifier(
            max_iter=cfg.gbdt_max_iter,
            early_stopping=True,
            validation_fraction=0.2,
            n_iter_no_change=10,
            random_state=cfg.seed,
        )
        clf.fit(x[train], y[train])
        scores[test] = clf.predict_proba(x[test])[:, 1]
        aucs.append(roc_auc_score(y[test], scores[test]))
    return {
        "auc": float(np.mean(aucs)),
        "auc_std": float(np.std(aucs, ddof=1)),
        "fold_aucs": aucs,
        "scores": scores,
        "labels": y,
    }


class _Net(torch.nn.Module):
    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_in + 1, hidden),
            torch.nn.LeakyReLU(0.1),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(hidden, hidden),
            torch.nn.LeakyReLU(0.1),
            torch.nn.Linear(hidden, 1),
        )

    def forward(self, x):
        return self.net(x)[:, 0]


class _Standardise:
    """Per-input standardisation fitted on training rows (scikit-learn's StandardScaler).

    Inputs that are constant in more than 99 % of the training rows (voxels that
    are almost always empty) are dropped: their tiny spread would blow a rare
    deposit up to hundreds of standard deviations. The rest is clipped at
    +-``clip`` standard deviations.
    """

    def __init__(self, x: np.ndarray, clip: float = 5.0) -> None:
        self.keep = (x != x[0]).mean(axis=0) > 0.01
        self.keep[-1] = True  # log E_p
        self.scaler = StandardScaler().fit(x[:, self.keep])
        self.clip = clip

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        z = np.zeros(x.shape, dtype=np.float32)  # dropped inputs stay 0 (the net's width is fixed)
        z[:, self.keep] = np.clip(self.scaler.transform(x[:, self.keep]), -self.clip, self.clip)
        return torch.from_numpy(z)


def _fit_net(x: np.ndarray, y: np.ndarray, cfg: JudgeConfig, seed: int) -> tuple[_Net, _Standardise]:
    """Train the voxel net with early stopping on an inner 20 % validation split.

    The state with the lowest validation loss is kept, the untrained net included:
    when training never beats it (identical samples), the net has learned only
    noise, and keeping that would bias the out-of-fold AUC below 0.5.
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_val = max(2, len(y) // 5)
    val, fit = perm[:n_val], perm[n_val:]
    scale = _Standardise(x[fit])
    xt, yt = scale(x[fit]), torch.from_numpy(y[fit])
    xv, yv = scale(x[val]), torch.from_numpy(y[val])
    torch.manual_seed(seed)
    net = _Net(x.shape[1] - 1, cfg.net_hidden)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.net_lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def val_loss() -> float:
        net.eval()
        with torch.no_grad():
            return float(bce(net(xv), yv))

    best, best_state, stale = val_loss(), copy.deepcopy(net.state_dict()), 0
    for _ in range(cfg.net_epochs):
        net.train()
        for idx in torch.randperm(len(xt), generator=g).split(cfg.net_batch):
            loss = bce(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        v = val_loss()
        if v < best - 1e-4:
            best, best_state, stale = v, copy.deepcopy(net.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.net_patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    return net, scale


def classifier_auc_voxels(
    v_ref: np.ndarray, e_ref: np.ndarray, v_gen: np.ndarray, e_gen: np.ndarray, cfg: JudgeConfig
) -> dict[str, Any]:
    """k-fold AUC of a small MLP on pooled voxels (energy fractions and log energies) plus
    log E_p (balanced samples)."""
    x = np.vstack([v_ref, v_gen]).astype(np.float32)
    x = np.hstack([x, np.log(np.concatenate([e_ref, e_gen]))[:, None].astype(np.float32)])
    y = np.concatenate([np.zeros(len(v_ref)), np.ones(len(v_gen))]).astype(np.float32)
    aucs, scores = [], np.zeros(len(y))
    folds = StratifiedKFold(cfg.folds, shuffle=True, random_state=cfg.seed).split(x, y)
    for fold, (train, test) in enumerate(folds):
        net, scale = _fit_net(x[train], y[train], cfg, cfg.seed + fold)
        with torch.no_grad():
            scores[test] = torch.sigmoid(net(scale(x[test]))).numpy()
        aucs.append(roc_auc_score(y[test], scores[test]))
    return {
        "auc": float(np.mean(aucs)),
        "auc_std": float(np.std(aucs, ddof=1)),
        "fold_aucs": aucs,
        "scores": scores,
        "labels": y,
    }


def energy_regression(
    x_ref: np.ndarray, e_ref: np.ndarray, x_gen: np.ndarray, e_gen: np.ndarray, cfg: JudgeConfig
) -> dict[str, Any]:
    """Relative bias and resolution of E_p predicted from the showers' features.

    The regressor never sees generated showers in training: the reference gets
    out-of-fold predictions, the generated showers the model trained on all of it.
    """
    target = np.log(e_ref)
    oof = np.zeros(len(e_ref))
    for train, test in KFold(cfg.folds, shuffle=True, random_state=cfg.seed).split(x_ref):
        reg = HistGradientBoostingRegressor(max_iter=cfg.gbdt_max_iter, random_state=cfg.seed)
        oof[test] = reg.fit(x_ref[train], target[train]).predict(x_ref[test])
    reg = HistGradientBoostingRegressor(max_iter=cfg.gbdt_max_iter, random_state=cfg.seed).fit(x_ref, target)
    pred_gen = reg.predict(x_gen)
    out = {}
    for name, pred, true in (("reference", oof, e_ref), ("generated", pred_gen, e_gen)):
        rel = np.exp(pred) / true - 1.0
        out[name] = {
            "bias": float(np.mean(rel)),
            "resolution": float(np.std(rel, ddof=1)),
            "n": int(len(rel)),
            "predicted_gev": (np.exp(pred) / 1e3).tolist(),
            "true_gev": (true / 1e3).tolist(),
        }
    return out


def judge(
    reference_split, transforms, generated, out_json, out_png, model: str, cfg: JudgeConfig | None = None
) -> dict[str, Any]:
    """Run the three judges; write the results (JSON) and a figure (ROC curves, regression).

    ``reference_split`` is a preprocessed split inverted with ``transforms``, or a
    canonical file when ``transforms`` is None; ``generated`` is canonical.
    """
    cfg = cfg or JudgeConfig()
    with io.open_h5(generated) as f:
        geometry = file_geometry(io.check_canonical(f, generated))
    shape = geometry.cell_shape
    factors = pool_factors(shape, cfg.net_max_inputs) if isinstance(geometry, GridCalorimeter) else (1,) * len(shape)
    ref = load_sample(reference_split, transforms, geometry, cfg, factors, cfg.max_showers)
    gen = load_sample(generated, None, geometry, cfg, factors, cfg.max_showers)
    n = min(len(ref["energy"]), len(gen["energy"]))
    if n < 2 * cfg.folds:
        raise ValueError(f"the judge needs at least {2 * cfg.folds} showers per sample, got {n}")
    rng = np.random.default_rng(cfg.seed)
    ir, ig = (np.sort(rng.choice(len(s["energy"]), n, replace=False)) for s in (ref, gen))
    keys = [k for k in ref["features"] if k in gen["features"]]
    xr, xg = _matrix(ref["features"], keys)[ir], _matrix(gen["features"], keys)[ig]
    hlf = classifier_auc_hlf(xr, xg, cfg)
    vox = classifier_auc_voxels(ref["voxels"][ir], ref["energy"][ir], gen["voxels"][ig], gen["energy"][ig], cfg)
    reg_keys = [k for k in keys if k not in ("e_p", "sf")]
    reg = energy_regression(
        _matrix(ref["features"], reg_keys), ref["energy"], _matrix(gen["features"], reg_keys), gen["energy"], cfg
    )
    result = {
        "model": model,
        "n_per_class": n,
        "folds": cfg.folds,
        "classifier_hlf": {
            "auc": hlf["auc"],
            "auc_std": hlf["auc_std"],
            "fold_aucs": hlf["fold_aucs"],
            "features": keys,
        },
        "classifier_voxels": {
            "auc": vox["auc"],
            "auc_std": vox["auc_std"],
            "fold_aucs": vox["fold_aucs"],
            "pool_factors": list(factors),
        },
        "energy_regressor": {k: {kk: vv for kk, vv in v.items() if not kk.endswith("_gev")} for k, v in reg.items()},
        "interpretation": "AUC 0.5: the judge cannot tell generated from reference showers; 1.0: always can.",
    }
    write_json(out_json, result)
    if out_png is not None:
        _figure(hlf, vox, reg, model, Path(out_png))
    log.info(
        "judge: AUC(features) %.3f +- %.3f, AUC(voxels) %.3f +- %.3f",
        hlf["auc"],
        hlf["auc_std"],
        vox["auc"],
        vox["auc_std"],
    )
    return result


def _figure(hlf, vox, reg, model: str, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep as hep

    hep.style.use("ROOT")
    plt.rcParams.update({"font.size": 13, "axes.labelsize": 15, "legend.fontsize": 11})
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for res, name in ((hlf, "high-level features (GBDT)"), (vox, "voxels (MLP)")):
        fpr, tpr, _ = roc_curve(res["labels"], res["scores"])
        axes[0].plot(fpr, tpr, label=f"{name}: AUC {res['auc']:.3f} $\\pm$ {res['auc_std']:.3f}")
    axes[0].plot([0, 1], [0, 1], ls=":", color="0.5", label="indistinguishable")
    axes[0].set_xlabel("false positive rate")
    axes[0].set_ylabel("true positive rate")
    axes[0].set_title(f"reference vs {model}, out-of-fold")
    axes[0].legend(loc="lower right")
    for name, marker in (("reference", "o"), ("generated", "s")):
        r = reg[name]
        axes[1].scatter(
            r["true_gev"],
            r["predicted_gev"],
            s=6,
            marker=marker,
            alpha=0.5,
            label=f"{name if name == 'reference' else model}: bias {100 * r['bias']:.1f} %, "
            f"resolution {100 * r['resolution']:.1f} %",
        )
    lim = [min(min(reg["reference"]["true_gev"]), 1e-3), max(reg["reference"]["true_gev"]) * 1.1]
    axes[1].plot(lim, lim, ls=":", color="0.5")
    axes[1].set_xlabel("true $E_p$ [GeV]")
    axes[1].set_ylabel("predicted $E_p$ [GeV]")
    axes[1].set_title("energy regressor trained on the reference")
    axes[1].legend(loc="upper left")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "pdf"):
        save_figure(fig, out_png.with_suffix(f".{ext}"), dpi=90)
    plt.close(fig)
