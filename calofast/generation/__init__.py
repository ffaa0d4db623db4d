"""Sampling any model family: conditions, networks (plain or optimised), batches, and the
one writer of generated showers in the canonical layout."""
