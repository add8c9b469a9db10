# Strain, in-plane rotation and out-of-plane tilt maps of the demo scan (`fourdcrystal strain`).
# The demo scan is a polycrystal mosaic of different crystals: no reference region is given, so each
# grain's strain and rotation are relative to its own median lattice (fourdcrystal.analysis.strain).
# The same from py4DSTEM's vectors of the scan (predict --baseline classical) in classical/ inside, and
# from the shipped pretrained model's (what `fourdcrystal predict` runs by default) in pretrained/.


rule strain_demo:
    input:
        vectors=rules.scan_demo.output.vectors,
        cube=rules.scan_demo.output.cube,
        model=MODEL,
        metrics=EVAL_METRICS,  # py4DSTEM settings tuned on val
        shipped=SHIPPED_MODEL,
    output:
        strain=directory(STRAIN_DEMO),
    log:
        f"{LOGS}/scan_demo/strain_demo.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/train.yaml"
    script:
        "../../scripts/strain_demo.py"
