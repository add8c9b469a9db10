#!/usr/bin/env bash
# Install SLURM + munge from Debian's packages and start a single-node cluster on 127.0.0.1, so the
# workflow's NERSC profile (profiles/ci-slurm) is exercised through real sbatch/srun/squeue.
#
#   sudo .ci/slurm/setup.sh        # as root (CI runs as root); ~11 s install, ~1 s to come up
#   .ci/slurm/stop.sh              # stops exactly the daemons this script started (pids in $STATE)
#
# The node advertises 4 fake A100s (gres files are links to /dev/null) and Features=gpu, so the
# profile's `-C gpu --gpus=N` requests are scheduled for real; nothing runs on a GPU.
# Measured on Debian 12 (Slurm 22.05.8, munge 0.5.15).
set -euo pipefail

STATE=${FOURDCRYSTAL_SLURM_STATE:-/tmp/fourdcrystal-slurm}
NODE=ci-node
# More CPUs than the VM has (config_overrides): a group of 4 one-CPU jobs must fit on the node.
NODE_CPUS=${FOURDCRYSTAL_SLURM_CPUS:-16}
NODE_MEM_MB=${FOURDCRYSTAL_SLURM_MEM_MB:-64000}

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: must run as root (it installs packages and starts daemons) — fix: run it with sudo" >&2
  exit 2
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# The packages' postinst may have started daemons through an init system; we manage our own.
mkdir -p "$STATE" /var/log/slurm /var/spool/slurmctld /var/spool/slurmd /etc/slurm
if [ -s "$STATE/pids" ]; then
  "$(dirname "$0")/stop.sh" || true
fi

# --- munge: key, then a socket directory with mode 0711 (munged refuses anything looser) -------
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
chmod 0711 /run/munge
runuser -u munge -- /usr/sbin/munged --foreground >"$STATE/munged.log" 2>&1 &
echo $! >"$STATE/pids"
for _ in $(seq 50); do [ -S /run/munge/munge.socket.2 ] && break; sleep 0.1; done
munge -n | unmunge >/dev/null

# --- fake GPUs: gres needs device files; /dev/null links are enough for scheduling and env -----
for i in 0 1 2 3; do ln -sf /dev/null "/dev/nvidia-fake$i"; done

# SLURM_CONF is stripped by the jobstep plugin before its inner srun: the config must sit at the
# compiled-in default path.
cat >/etc/slurm/slurm.conf <<EOF
ClusterName=fourdcrystal-ci
# slurmctld only starts on the host named here, so it is this machine's short hostname.
SlurmctldHost=$(hostname -s)(127.0.0.1)
MailProg=/bin/true
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
# No cgroups in a container: track processes by parent pid, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
# No slurmdbd: accounting off (so sacct fails; the profile queries status with squeue).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
GresTypes=gpu
# squeue must still list a finished job when the plugin looks: MinJobAge >= 3 x the profile's
# slurm-init-seconds-before-status-checks, or the plugin falls back to sacct.
MinJobAge=300
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerParameters=defer_batch=false
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$(hostname) CPUs=$NODE_CPUS RealMemory=$NODE_MEM_MB Gres=gpu:a100:4 Features=gpu State=UNKNOWN
PartitionName=gpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
cat >/etc/slurm/gres.conf <<EOF
AutoDetect=off
NodeName=$NODE Name=gpu Type=a100 File=/dev/nvidia-fake[0-3]
EOF
# A fresh state directory: no jobs or node state left over from an earlier CI run.
rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*

slurmctld -D -i >"$STATE/slurmctld.out" 2>&1 &
echo $! >>"$STATE/pids"
slurmd -D -N "$NODE" >"$STATE/slurmd.out" 2>&1 &
echo $! >>"$STATE/pids"

deadline=$((SECONDS + 60))
while [ $SECONDS -lt $deadline ]; do
  if timeout 5 sinfo -h -N -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then
    timeout 5 sinfo -N -o '%N %t %c %m %G %f'
    echo "setup.sh: SLURM cluster up (pids $(tr '\n' ' ' <"$STATE/pids"))"
    exit 0
  fi
  sleep 0.2
done
echo "setup.sh: the SLURM node did not become idle — see /var/log/slurm/slurmctld.log and slurmd.log" >&2
timeout 5 sinfo -N -l >&2 || true
"$(dirname "$0")/stop.sh" >&2 || true
exit 1
