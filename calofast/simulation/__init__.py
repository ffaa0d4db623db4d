"""The offline parametrised shower simulator (GFlash-style longitudinal and lateral profiles, sampling fluctuations) of every geometry."""
