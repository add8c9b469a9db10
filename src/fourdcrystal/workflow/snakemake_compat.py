"""Workarounds for bugs in the Snakemake version we pin (requirements/constraints.txt).

Remove each once upstream fixes it: tests/test_slurm.py::test_nersc_groups_pack_each_job_once
fails without it today.
"""


def fresh_group_jobs() -> None:
    """Work around a Snakemake 9 bug that breaks `group-components` (profiles/nersc).

    GroupJobFactory caches a GroupJob per (group id, member jobs), and DAG._update_group_components
    merges N components *in place* into the first one. Every later DAG postprocess (after the
    `select` checkpoint, at start-up) gets the already-merged object back for its first member set
    and merges again: groups of 8 crystals become 64, 512, ..., overlap, and the scheduler re-runs
    them (seed scale: dry run > 7 min, GBs of log). A cached group whose members changed since it
    was cached is stale; build a fresh one. Equal member sets still give equal (==, hash) groups,
    so running/ready bookkeeping is unaffected."""
    from snakemake.jobs import GroupJob, GroupJobFactory

    if getattr(GroupJobFactory.new, "_fourdcrystal_fresh", False):
        return

    def new(self, id, jobs, resources):
        jobs = frozenset(jobs)
        key = (id, jobs)
        obj = self.cache.get(key)
        if obj is None or obj.jobs != jobs:
            obj = self.cache[key] = GroupJob(id, jobs, resources)
        return obj

    new._fourdcrystal_fresh = True
    GroupJobFactory.new = new

