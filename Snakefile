# calofast: generative calorimeter shower simulation workflow.
# Run `snakemake --cores all` for the offline demo (see README.md).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "rules/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/preprocess.smk"
include: "rules/quicklook.smk"
include: "rules/train.smk"
include: "rules/select.smk"
include: "rules/generate.smk"
include: "rules/validate.smk"
include: "rules/benchmark.smk"
include: "rules/scan.smk"
include: "rules/amplify.smk"
include: "rules/geant4.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
