"""The GANplification study's pieces (paper 003): quantile bins, the quantile D_JS, the
effective sample size and the KDE / histogram baselines, on constructed samples."""

import numpy as np
import pandas as pd
import pytest

from calofast.amplification import baselines, factor, quantiles


def test_quantile_bins_have_equal_reference_populations_and_alternate_dimensions():
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(size=4096), rng.exponential(size=4096)], axis=1)
    bins = quantiles.build(x, 64)
    assert bins.n_bins == 64 and np.array_equal(bins.counts(x), np.full(64, 64))
    # the levels split dimension 0, 1, 0, 1, ... (heap order: level l has nodes 2^l - 1 ... 2^(l+1) - 2)
    assert [int(bins.dims[2**level - 1]) for level in range(6)] == [0, 1, 0, 1, 0, 1]
    # 1D: uniform reference -> edges at the k / n_bins quantiles; a second sample lands evenly
    u = np.sort(rng.random(20000))
    b1 = quantiles.build(u, 8)
    assert b1.edges[0] == pytest.approx(0.5, abs=0.01) and b1.edges[1] == pytest.approx(0.25, abs=0.01)
    other = b1.counts(rng.random(80000))
    assert np.all(np.abs(other - 10000) < 1000)  # binomial (95) and edge (~190) spreads


def test_quantile_bins_ties_errors_and_the_n_over_10_limit():
    x = np.repeat(np.arange(5.0), 100)  # heavy ties: populations differ, assignment is consistent
    bins = quantiles.build(x, 4)
    counts = bins.counts(x)
    assert counts.sum() == 500 and np.array_equal(bins.counts(x[::-1]), counts)
    assert all(len(np.unique(x[bins.assign(x) == i])) <= 2 for i in range(4))
    with pytest.raises(ValueError, match="power of two"):
        quantiles.build(x, 6)
    with pytest.raises(ValueError, match="at least 2048"):
        quantiles.build(np.arange(100.0), 1024)
    with pytest.raises(ValueError, match="NaN"):
        quantiles.build(np.array([1.0, np.nan, 2.0, 3.0]), 2)
    assert quantiles.bin_counts(1000) == [2, 4, 8, 16, 32, 64]
    assert quantiles.bin_counts(100000, largest=256)[-1] == 256


def test_quantile_djs_on_analytic_cases():
    assert quantiles.djs([5, 5, 5], [1, 1, 1]) == pytest.approx(0.0, abs=1e-12)
    assert quantiles.djs([1, 0], [0, 1]) == pytest.approx(np.log(2.0))
    # p = (1, 0), g = (1/2, 1/2): m = (3/4, 1/4)
    expected = 0.5 * np.log(1 / 0.75) + 0.5 * (0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25))
    assert quantiles.djs([2, 0], [3, 3]) == pytest.approx(expected)
    with pytest.raises(ValueError):
        quantiles.djs([0, 0], [1, 1])
    # statistical D_JS of a sample of the truth falls as ~ (bins - 1) / (8 N)
    rng = np.random.default_rng(1)
    ref = rng.normal(size=200_000)
    curve = {n: quantiles.djs_curve(ref, rng.normal(size=n), [32])[0] for n in (2000, 20000)}
    assert curve[2000] == pytest.approx(31 / (8 * 2000), rel=0.5)
    assert curve[2000] / curve[20000] == pytest.approx(10.0, rel=0.5)


def test_effective_size_of_a_sample_of_known_size():
    """A "model" that is an 8k sample of the truth is worth ~8k reference showers; trained on
    1k it amplifies ~8x; the bounds are reported as such."""
    rng = np.random.default_rng(2)
    ref = rng.normal(size=200_000)
    sizes = np.array([1000, 2000, 5000, 10000, 20000])
    n_bins = [64]
    djs_sizes = np.array(
        [np.mean([quantiles.djs_curve(ref, rng.normal(size=n), n_bins)[0] for _ in range(4)]) for n in sizes]
    )
    model = np.mean([quantiles.djs_curve(ref, rng.normal(size=8000), n_bins)[0] for _ in range(4)])
    n_eff, rel = factor.effective_size(sizes, djs_sizes, model)
    assert rel == "=" and 5000 < n_eff < 13000
    amp, rel = factor.amplification(sizes, djs_sizes, model, n_train=1000)
    assert rel == "=" and amp == pytest.approx(n_eff / 1000)
    assert factor.effective_size(sizes, djs_sizes, djs_sizes[-1] / 3) == (20000.0, ">=")
    assert factor.effective_size(sizes, djs_sizes, djs_sizes[0] * 3) == (1000.0, "<=")
    # exact on a power law: D = 1 / N -> N_eff = 1 / D between the points
    assert factor.effective_size([10, 1000], [0.1, 0.001], 0.01)[0] == pytest.approx(100.0)
    with pytest.raises(ValueError):
        factor.effective_size([10], [0.1], 0.1)
    with pytest.raises(ValueError):
        factor.amplification([10, 100], [0.1, 0.01], 0.05, n_train=0)


def test_kde_bandwidth_by_cross_validation_and_sampling():
    rng = np.random.default_rng(3)
    train = rng.normal(5.0, 2.0, size=1000)
    kde = baselines.fit_kde(train, seed=0)
    silverman = 1.06 * 1000 ** (-0.2)  # in units of the standard deviation
    assert silverman / 2 < kde.bandwidth < silverman * 2
    s = kde.sample(50000, seed=1)[:, 0]
    assert s.mean() == pytest.approx(train.mean(), abs=0.05)
    assert s.std() == pytest.approx(train.std() * np.sqrt(1 + kde.bandwidth**2), rel=0.03)
    # a bimodal sample: narrower kernels than the unimodal rule, which would merge the modes
    bimodal = baselines.fit_kde(np.concatenate([rng.normal(-3, 0.3, 500), rng.normal(3, 0.3, 500)]), seed=0)
    assert bimodal.bandwidth < 0.5 * silverman
    two = baselines.fit_kde(rng.normal(size=(500, 2)), seed=0)
    assert two.sample(10, seed=0).shape == (10, 2)


def test_histogram_bins_by_cross_validated_likelihood_and_sampling():
    rng = np.random.default_rng(4)
    small = baselines.fit_histogram(rng.normal(size=300), seed=0)
    large = baselines.fit_histogram(rng.normal(size=30000), seed=0)
    assert 2 <= small.bins < large.bins
    s = large.sample(100000, seed=1)[:, 0]
    assert s.mean() == pytest.approx(0.0, abs=0.03) and s.std() == pytest.approx(1.0, rel=0.05)
    two = baselines.fit_histogram(rng.normal(size=(2000, 2)), seed=0)
    assert two.bins < large.bins and two.sample(5, seed=0).shape == (5, 2)
    # a held-out value in a bin without training values: log-likelihood -inf
    z = np.array([[0.0], [0.1], [0.9], [1.0]])
    assert baselines.histogram_log_likelihood(z, np.array([[0.5]]), 4, np.array([0.0]), np.array([1.0])) == -np.inf
    assert baselines.histogram_log_likelihood(
        z, np.array([[0.05]]), 4, np.array([0.0]), np.array([1.0])
    ) == pytest.approx(np.log(0.5 / 0.25))
    with pytest.raises(ValueError, match="n >= 10"):
        baselines.fit_histogram(np.arange(5.0))


def test_image_observables_on_constructed_images():
    from calofast.amplification.study import image_observables

    img = np.zeros((3, 10, 10))
    img[0, 2, 7] = 30.0  # one pixel
    img[0, 4, 7] = 10.0
    img[0, 5, 5] = 0.05  # below the 0.1 MeV cut: dropped
    img[1, 9, 0] = 4.0  # below the 5 MeV E_pixel cut, counted in E_vis
    obs = image_observables(img)
    np.testing.assert_allclose(obs["e_vis"], [40.0, 4.0, 0.0])
    np.testing.assert_allclose(obs["e_peak"], [30.0, 4.0, 0.0])
    np.testing.assert_allclose(np.sort(obs["e_pixel"]), [10.0, 30.0])
    np.testing.assert_allclose(obs["cog_x"], [(2 * 30 + 4 * 10) / 40, 9.0, 4.5])
    np.testing.assert_allclose(obs["cog_y"], [7.0, 0.0, 4.5])
    with pytest.raises(ValueError, match="finite"):
        image_observables(np.full((2, 10), 1.0))


def test_study_tables_find_the_known_amplification():
    """Reference sets of 1k-20k values of N(0, 1), a "model" of 8 independent 8k samples and a
    training size of 1k: the table gives an amplification near 8 where the bins are not sparse."""
    from calofast.amplification.study import amplification_table, djs_table, djs_values, summarise

    rng = np.random.default_rng(5)
    ref = rng.normal(size=100_000)
    sizes = {f"g4_{n}": n for n in (1000, 2000, 5000, 10000, 20000)}
    samples = {name: [rng.normal(size=n) for _ in range(4)] for name, n in sizes.items()}
    samples["model"] = [rng.normal(size=8000) for _ in range(4)]
    table = djs_table(ref, samples, [16, 64, 256])
    assert set(table["sample"]) == {*sizes, "model"} and len(table) == 18
    row = table[(table["sample"] == "g4_1000") & (table["n_bins"] == 256)].iloc[0]
    assert row["sparse"] and row["n_sets"] == 4 and row["djs_std"] > 0
    amp = amplification_table(table, sizes, "model", n_train=1000)
    assert list(amp["n_bins"]) == [16, 64, 256]
    good = amp[amp["n_bins"] >= 64]
    assert (good["relation"] == "=").all() and good["amplification"].between(4.5, 14).all()
    # per set: each of the model's four samples is worth about 8k showers as well
    values = djs_values(ref, samples, [16, 64, 256])
    per_set = amplification_table(summarise(values), sizes, "model", 1000, values)
    good = per_set[per_set["n_bins"] >= 64]
    assert good["amplification_mean"].between(4.5, 14).all() and (good["amplification_std"] > 0).all()
    assert np.allclose(per_set["amplification"], amp["amplification"])


def test_amplification_of_an_exact_zero_divergence():
    """A sample split exactly like the reference (D_JS = 0) is floored, not an error: it beats
    every reference set (">=")."""
    from calofast.amplification.study import amplification_table

    table = pd.DataFrame(
        [
            {"sample": "r100", "n_bins": 2, "djs_mean": 1e-3, "sparse": False},
            {"sample": "r1000", "n_bins": 2, "djs_mean": 0.0, "sparse": False},
            {"sample": "model", "n_bins": 2, "djs_mean": 0.0, "sparse": False},
        ]
    )
    amp = amplification_table(table, {"r100": 100, "r1000": 1000}, "model", 10)
    assert amp.iloc[0]["relation"] == ">=" and amp.iloc[0]["amplification"] == 100


def test_disjoint_sets_and_the_study_figure(tmp_path):
    from calofast.amplification.study import disjoint_sets, djs_table, plot_djs

    sets = disjoint_sets(10000, {"train": (5, 1000), "g4_2000": (2, 2000)}, seed=3)
    assert [len(s) for s in sets["train"]] == [1000] * 5 and len(sets["reference"][0]) == 1000
    every = np.concatenate([s for group in sets.values() for s in group])
    assert len(every) == 10000 and len(np.unique(every)) == 10000  # no shower in two sets
    again = disjoint_sets(10000, {"train": (5, 1000), "g4_2000": (1, 2000)}, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(sets["train"], again["train"]))  # earlier sets kept
    with pytest.raises(ValueError, match="pool has 100"):
        disjoint_sets(100, {"train": (5, 20)}, seed=0)
    rng = np.random.default_rng(6)
    table = djs_table(rng.normal(size=5000), {"a": [rng.normal(size=300) for _ in range(2)]}, [2, 4, 64])
    plot_djs(table, "E_vis", tmp_path / "djs.png")
    assert (tmp_path / "djs.png").stat().st_size > 1000
