#!/usr/bin/env bash
# Install the calofast package (all workflow logic) into the fresh conda env.
# Snakemake runs this from its working directory; run snakemake from the
# repository root or point CALOFAST_SRC at the checkout.
set -euo pipefail
pip install --no-deps "${CALOFAST_SRC:-$PWD}"
