"""Geant4 through ``geant4_pybind`` (the optional ``geant4`` extra): low-energy data tables,
the grid calorimeters built in Geant4, and showers simulated by it."""
