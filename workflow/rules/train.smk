# Training: one `train` job runs torchrun with train.nproc processes (GPUs on a GPU node, gloo
# processes on CPU) over the dataset manifest.  Loop, loss and checkpointing: src/fourdcrystal/learning/train.py.
import json
import os
import sys

from snakemake.settings.types import DeploymentMethod


rule train:
    input:
        manifest=MANIFEST,
        info=DATASET_INFO,
        # read when train.label_min_snr is set (labels counted at the drawn dose)
        reflections=REFLECTIONS,
    output:
        model=MODEL,
        steps=f"{RESULTS}/model/metrics_steps.csv",
        epochs=f"{RESULTS}/model/metrics_epochs.csv",
        loss=report(f"{FIGURES}/loss.png", caption="../report/loss.rst", category="Training"),
        validation=report(f"{FIGURES}/validation.png", caption="../report/validation.rst", category="Training"),
    log:
        f"{LOGS}/train/train.log",
    params:
        # the effective config sections the training reads, on the command line, so that
        # --configfile / --config overrides reach the training processes (and retrigger training)
        cfg=json.dumps({k: config[k] for k in ("seed", "model", "train", "augment")}, sort_keys=True),
        nproc=config["train"]["nproc"],
        # the rule's conda env `python` under conda deployment, else Snakemake's own interpreter
        # (so `.venv/bin/snakemake` works without an activated venv)
        python="python" if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method else sys.executable,
        out=lambda wildcards, output: os.path.dirname(output.model),
        figures=lambda wildcards, output: os.path.dirname(output.loss),
    # CPU: torch's intra-op threads (OMP_NUM_THREADS below); on GPU nodes the profile sets cpus
    threads: 2
    resources:
        # GPU count, runtime and memory for SLURM come from the profile (profiles/nersc set-resources)
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/train.yaml"
    shell:
        # checkpoint.pt in the output folder is deliberately not an output: a rerun after a crash
        # resumes from it (fourdcrystal.learning.train checks that it belongs to the same config and data).
        "OMP_NUM_THREADS=$(( {threads} / {params.nproc} > 0 ? {threads} / {params.nproc} : 1 )) "
        "{params.python:q} -m torch.distributed.run --standalone --nproc_per_node={params.nproc} "
        "-m fourdcrystal.learning.train --config-json {params.cfg:q} --manifest {input.manifest} "
        "--dataset-info {input.info} --out {params.out} --figures {params.figures} > {log} 2>&1"
