# Multislice quartets: one `simulate` job per crystal and shard of orientations, then the `dataset`
# manifest over all shards and its figures.  Store layout and columns: docs/CONTRACTS.md.

wildcard_constraints:
    shard=r"\d{4}",


rule simulate:
    input:
        cifs=CIFS,
        selected=SELECTED,
        orientations=ORIENTATIONS,
        supercells=SUPERCELLS,
    output:
        shard=directory(SHARD),
    log:
        f"{LOGS}/simulate/{{crystal}}/shard-{{shard}}.log",
    params:
        # Only the sections that determine a shard's content, so editing e.g. the split fractions
        # does not re-simulate; editing these does (Snakemake's params rerun trigger).
        seed=config["seed"],
        geometry=config["geometry"],
        orientations=config["orientations"],
        simulation=config["simulation"],
        # the truth keeps one of two reflections closer than the peak extraction's spacing
        label_min_spacing_px=config["evaluate"]["network_min_spacing_px"],
    # the multislice FFTs use one core well; a second helps abTEM's threaded FFT and zarr's codecs
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        # one GPU per job when simulating on GPUs (pinned inside grouped jobs by fourdcrystal.simulation.gpu_slots);
        # the SLURM values themselves come from the profile (profiles/nersc set-resources).
        gpu=1 if config["simulation"]["device"] == "gpu" else 0,
    conda:
        "../../envs/simulate.yaml"
    script:
        "../../scripts/simulate.py"


rule dataset:
    input:
        shards=all_shards,
    output:
        manifest=MANIFEST,
        reflections=REFLECTIONS,
        info=DATASET_INFO,
    log:
        f"{LOGS}/dataset/dataset.log",
    params:
        dataset=config["dataset"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/simulate.yaml"
    script:
        "../../scripts/dataset.py"


rule dataset_figures:
    input:
        manifest=MANIFEST,
        info=DATASET_INFO,
    output:
        quartets=report(f"{FIGURES}/quartets.png", caption="../report/quartets.rst", category="Dataset"),
        summary=report(f"{FIGURES}/dataset_summary.png", caption="../report/dataset_summary.rst", category="Dataset"),
    log:
        f"{LOGS}/dataset/figures.log",
    params:
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/simulate.yaml"
    script:
        "../../scripts/dataset_figures.py"
