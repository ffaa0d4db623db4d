"""Speed benchmarks: the generation paths of a trained model and the reference simulator (:mod:`.timing`), the optional Geant4 baseline (:mod:`.geant4`)."""
