# Crystal stage: structures (builtin AFLOW examples | Materials Project | CIF folder) -> AFLOW
# prototype labels -> √-law selection. Logic: fourdcrystal.crystals.

# The Materials Project query cache lives beside the stage outputs; reruns read it instead of the API.
MP_CACHE = f"{RESULTS}/crystals/mp_cache"


rule structures:
    output:
        STRUCTURES,
    log:
        f"{LOGS}/crystals/structures.log",
    params:
        mp_cache=MP_CACHE,
        source=lambda wc: config["source"],  # rerun when the source section changes
    resources:
        mem_mb=2000,
        runtime=60,
    threads: 1
    conda:
        "../../envs/crystals.yaml"
    script:
        "../../scripts/structures.py"


rule prototypes:
    input:
        structures=STRUCTURES,
    output:
        PROTOTYPES,
    log:
        f"{LOGS}/crystals/prototypes.log",
    params:
        tolerances=lambda wc: config["prototypes"],
    resources:
        mem_mb=2000,
        runtime=60,
    threads: 2
    conda:
        "../../envs/crystals.yaml"
    script:
        "../../scripts/prototypes.py"


checkpoint select:
    input:
        structures=STRUCTURES,
        prototypes=PROTOTYPES,
    output:
        table=SELECTED,
        cifs=directory(CIFS),
    log:
        f"{LOGS}/crystals/select.log",
    params:
        n_crystals=config["selection"]["n_crystals"],
        seed=config["seed"],
    resources:
        mem_mb=1000,
        runtime=10,
    threads: 1
    conda:
        "../../envs/crystals.yaml"
    script:
        "../../scripts/select.py"
