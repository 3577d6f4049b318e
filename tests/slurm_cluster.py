"""A single-node SLURM cluster on this machine, for the tests marked `slurm`.

`LocalSlurm(directory).start()` writes a minimal `slurm.conf` for this host
(one node with all its cores, `select/cons_tres`, requeue allowed, a short
`KillWait`), starts `munged` (unless one runs), `slurmctld` and `slurmd` as
root on free ports, and waits until `sinfo` shows the node idle; `stop()`
cancels every job and stops what `start()` started. Commands reach it
through `SLURM_CONF` (`env`). It needs Debian's `slurm-wlm` and `munge`
packages (`.ci/run` installs them) and root, as slurmd does on a real
cluster.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from typing import Dict, List, Optional

from mmjax.sweeps.launch import SLURM_FINAL_STATES

DAEMONS = ('slurmctld', 'slurmd')


def missing() -> Optional[str]:
  """Why a local cluster cannot start here, or None."""
  absent = [b for b in ('munged', *DAEMONS, 'sbatch', 'srun')
            if not shutil.which(b, path=os.environ['PATH'] + ':/usr/sbin')]
  if absent:
    return (f'SLURM is not installed ({", ".join(absent)} not found): '
            'apt-get install slurm-wlm munge')
  if os.geteuid() != 0:
    return 'slurmd runs as root; these tests start it and need root'
  return None


def _running(pid: int) -> bool:
  """Whether process `pid` exists and is not a zombie."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except OSError:
    return False


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('', 0))
    return s.getsockname()[1]


class LocalSlurm:
  """A one-node SLURM cluster whose files all live in `directory`."""

  def __init__(self, directory: str):
    self.directory = directory
    self.conf = os.path.join(directory, 'slurm.conf')
    self.host = socket.gethostname().split('.')[0]
    self.env = {**os.environ, 'SLURM_CONF': self.conf}
    self._started: List[str] = []  # Pid files of the daemons started here.

  def _path(self, *parts: str) -> str:
    return os.path.join(self.directory, *parts)

  def _write_conf(self) -> None:
    for sub in ('state', 'spool', 'log'):
      os.makedirs(self._path(sub), exist_ok=True)
    settings = dict(
        # Loopback addresses: the host name need not resolve.
        ClusterName='mmjax', SlurmctldHost=f'{self.host}(127.0.0.1)',
        SlurmUser='root',
        AuthType='auth/munge', StateSaveLocation=self._path('state'),
        SlurmdSpoolDir=self._path('spool'),
        SlurmctldPidFile=self._path('slurmctld.pid'),
        SlurmdPidFile=self._path('slurmd.pid'),
        SlurmctldLogFile=self._path('log', 'slurmctld.log'),
        SlurmdLogFile=self._path('log', 'slurmd.log'),
        SlurmctldPort=_free_port(), SlurmdPort=_free_port(),
        # No cgroups in a container: track processes by parent id.
        ProctrackType='proctrack/linuxproc', TaskPlugin='task/none',
        SelectType='select/cons_tres', SelectTypeParameters='CR_CPU',
        SchedulerType='sched/backfill', MpiDefault='none',
        ReturnToService=2, JobRequeue=1,
        # Seconds between a job's SIGTERM and its SIGKILL when cancelled or
        # out of time: short, so tests do not wait.
        KillWait=5, SwitchType='switch/none',
        JobAcctGatherType='jobacct_gather/none',
        AccountingStorageType='accounting_storage/none',
        # Finished jobs stay visible to `scontrol show job` this long (s).
        MinJobAge=3600)
    lines = [f'{k}={v}' for k, v in settings.items()] + [
        f'NodeName={self.host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} '
        'State=UNKNOWN',
        'PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE '
        'State=UP']
    with open(self.conf, 'w') as f:
      f.write('\n'.join(lines) + '\n')

  def _start_munge(self) -> None:
    """Starts munged unless a credential already round-trips."""
    if subprocess.run('munge -n | unmunge', shell=True,
                      capture_output=True).returncode == 0:
      return
    os.makedirs('/run/munge', exist_ok=True)
    shutil.chown('/run/munge', 'munge', 'munge')
    subprocess.run(['runuser', '-u', 'munge', '--', '/usr/sbin/munged'],
                   check=True)

  def start(self, timeout: float = 60) -> 'LocalSlurm':
    self._write_conf()
    self._start_munge()
    for daemon in DAEMONS:
      subprocess.run([f'/usr/sbin/{daemon}', '-f', self.conf], check=True,
                     env=self.env)
      self._started.append(self._path(f'{daemon}.pid'))
    deadline = time.time() + timeout
    while self.run('sinfo', '-h', '-o', '%t', check=False).strip() != 'idle':
      if time.time() > deadline:
        self.stop()
        raise RuntimeError(f'SLURM did not come up in {timeout} s; see '
                           f'{self._path("log")}')
      time.sleep(0.5)
    return self

  def stop(self, grace: float = 10) -> None:
    """Cancels every job, then stops the daemons: SIGTERM, and SIGKILL for
    one still running after `grace` seconds (slurmd waits for the job steps
    it started)."""
    self.run('scancel', '--user=root', check=False)
    pids = []
    for pid_file in reversed(self._started):
      try:
        with open(pid_file) as f:
          pids.append(int(f.read()))
        os.kill(pids[-1], signal.SIGTERM)
      except (OSError, ValueError):
        pass  # Not running.
    deadline = time.time() + grace
    for pid in pids:
      while _running(pid) and time.time() < deadline:
        time.sleep(0.1)
      if _running(pid):
        os.kill(pid, signal.SIGKILL)
    self._started.clear()

  def run(self, *command: str, check: bool = True) -> str:
    """A SLURM command's stdout (CalledProcessError, with its stderr, if it
    fails and `check`)."""
    done = subprocess.run(command, env=self.env, capture_output=True,
                          text=True, timeout=120)
    if check and done.returncode:
      raise subprocess.CalledProcessError(done.returncode, command,
                                          done.stdout, done.stderr)
    return done.stdout

  def job(self, job_id: str) -> Dict[str, str]:
    """`scontrol show job`'s fields of one job (an array task: '12_3')."""
    text = self.run('scontrol', '-o', 'show', 'job', job_id)
    return dict(re.findall(r'(\w+)=(\S*)', text))

  def wait(self, job_ids: List[str], timeout: float = 600) -> Dict[str, str]:
    """Waits until every job is in a final state; job id -> JobState."""
    deadline = time.time() + timeout
    while True:
      states = {j: self.job(j)['JobState'] for j in job_ids}
      if all(s in SLURM_FINAL_STATES for s in states.values()):
        return states
      if time.time() > deadline:
        raise TimeoutError(f'SLURM jobs still running: {states}')
      time.sleep(0.5)
