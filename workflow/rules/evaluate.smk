# Bragg vectors: evaluation against the kinematic truth (network vs py4DSTEM vs oracle), a simulated
# 4D-STEM scan through `fourdcrystal predict`, and the final HTML report.
EVAL_DIR = f"{RESULTS}/evaluation"
SCAN_DEMO = f"{RESULTS}/scan_demo"


rule evaluate:
    input:
        manifest=MANIFEST,
        reflections=REFLECTIONS,
        model=MODEL,
    output:
        metrics=EVAL_METRICS,
        f1=report(f"{EVAL_DIR}/f1_vs_dose.png", caption="../report/evaluation.rst", category="Evaluation"),
        rms=report(f"{EVAL_DIR}/rms_bias_vs_thickness.png", caption="../report/evaluation.rst", category="Evaluation"),
        overlays=report(f"{EVAL_DIR}/overlays.png", caption="../report/evaluation.rst", category="Evaluation"),
    log:
        f"{LOGS}/evaluate/evaluate.log",
    params:
        evaluate=config["evaluate"],
        augment=config["augment"],
    # one core: the timing of network vs py4DSTEM is reported per core
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/train.yaml"
    script:
        "../../scripts/evaluate.py"


rule scan_demo:
    input:
        manifest=MANIFEST,
        model=MODEL,
        metrics=EVAL_METRICS,  # the network peak settings tuned on val
    output:
        cube=f"{SCAN_DEMO}/scan.npy",
        vectors=directory(f"{SCAN_DEMO}/predict"),
        map_png=report(f"{SCAN_DEMO}/bragg_vector_map.png", caption="../report/scan_demo.rst", category="Bragg vectors"),
    log:
        f"{LOGS}/scan_demo/scan_demo.log",
    params:
        scan_px=12,
        augment=config["augment"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/train.yaml"
    script:
        "../../scripts/scan_demo.py"


rule report:
    input:
        metrics=EVAL_METRICS,
        f1=rules.evaluate.output.f1,
        rms=rules.evaluate.output.rms,
        overlays=rules.evaluate.output.overlays,
        quartets=f"{FIGURES}/quartets.png",
        loss=f"{FIGURES}/loss.png",
        scan_map=rules.scan_demo.output.map_png,
        scan_vectors=rules.scan_demo.output.vectors,
    output:
        html=REPORT,
    log:
        f"{LOGS}/report/report.log",
    params:
        title="4D>Crystal",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/train.yaml"
    script:
        "../../scripts/report.py"
