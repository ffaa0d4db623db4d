"""The GANplification study (paper 003): how many reference showers a generative model's sample
is worth. :mod:`.quantiles` - equal-population bins of a reference sample and the quantile
Jensen-Shannon divergence; :mod:`.baselines` - the KDE and histogram density estimators fitted
to the same training sets; :mod:`.factor` - the effective sample size and the amplification
factor; :mod:`.study` - the observables of the pooled images and the study's tables."""
