# 4D>Crystal: crystals -> oriented supercells -> multislice quartets -> U-Net -> Bragg vectors.
# This file is the table of contents; each stage lives in workflow/rules/<stage>.smk and all logic
# in the fourdcrystal package (src/fourdcrystal). Configuration: config/config.yaml (config/README.md).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/crystals.smk"
include: "workflow/rules/supercells.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/strain.smk"


rule all:
    input:
        get_final_output,
    default_target: True
