#!/usr/bin/env bash
# Stop the daemons .ci/slurm/setup.sh started, by the pids it recorded (never by name: other
# SLURM or munge processes on the machine are not ours).
set -uo pipefail
STATE=${FOURDCRYSTAL_SLURM_STATE:-/tmp/fourdcrystal-slurm}
[ -s "$STATE/pids" ] || exit 0
# Reverse order: slurmd, slurmctld, then munged (the SLURM daemons need munge to shut down cleanly).
for pid in $(tac "$STATE/pids"); do
  kill -TERM "$pid" 2>/dev/null || continue
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
done
rm -f "$STATE/pids"
echo "stop.sh: SLURM test cluster stopped"
