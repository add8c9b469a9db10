# Orientations and oriented supercells: one job per selected crystal.
# The input is the CIF folder written by the `select` checkpoint (a directory output); the job
# reads {CIFS}/{crystal}.cif itself.  Outputs and frame conventions: docs/CONTRACTS.md.


rule supercells:
    input:
        cifs=CIFS,
    output:
        orientations=ORIENTATIONS,
        supercells=SUPERCELLS,
    log:
        f"{LOGS}/supercells/{{crystal}}.log",
    params:
        # Only the sections this stage reads, so unrelated config edits do not re-trigger it.
        seed=config["seed"],
        orientations=config["orientations"],
        geometry=config["geometry"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../../envs/crystals.yaml"
    script:
        "../../scripts/supercells.py"

