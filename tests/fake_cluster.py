"""A Ray cluster with the real autoscaler on one machine: `ray start --head` with an autoscaling
config for Ray's fake multi-node provider, whose "nodes" are extra raylets on this machine that the
autoscaler launches and terminates. It runs in its own process group, so stopping it stops only
its own processes (never another Ray cluster on the machine)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import ray

from ports import free_port


class FakeAutoscalingCluster:
    def __init__(self, workdir: str, head_cpus: float, head_resources: dict, node_resources: dict, max_nodes: int,
                 idle_timeout_minutes: float = 0.1):
        self.workdir, self.port = workdir, free_port()
        self.head_cpus, self.head_resources = head_cpus, head_resources
        self.config = {
            "cluster_name": "orchestra-fake",
            "max_workers": max_nodes,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{self.port}"},
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": head_cpus, **head_resources}, "node_config": {}, "max_workers": 0},
                "rollout.node": {"resources": node_resources, "node_config": {}, "min_workers": 0, "max_workers": max_nodes},
            },
            "head_node_type": "ray.head.default",
            "idle_timeout_minutes": idle_timeout_minutes,
            "upscaling_speed": 1.0,
            "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [], "rsync_exclude": [], "rsync_filter": [],
            "file_mounts_sync_continuously": False, "initialization_commands": [], "setup_commands": [],
            "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
        }
        self.proc = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120) -> None:
        path = os.path.join(self.workdir, "autoscaling.json")
        with open(path, "w") as f:
            json.dump(self.config, f)
        env = dict(os.environ, RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
        ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
        cmd = [ray_cli, "start", "--head", "--block", f"--port={self.port}", "--node-ip-address=127.0.0.1",
               f"--num-cpus={self.head_cpus}", f"--resources={json.dumps(self.head_resources)}",
               f"--autoscaling-config={path}", "--include-dashboard=false", f"--dashboard-port={free_port()}",
               f"--temp-dir={os.path.join(self.workdir, 'ray')}"]
        self.log = open(os.path.join(self.workdir, "head.log"), "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout_s
        gcs = os.path.join(self.workdir, "ray", "session_latest", "logs", "monitor.log")
        while not os.path.exists(gcs):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the fake autoscaling head did not start; see {self.log.name}")
            time.sleep(0.5)

    def alive_nodes(self) -> int:
        return sum(1 for n in ray.nodes() if n["Alive"])

    def stop(self) -> None:
        if self.proc is None:
            return
        # A graceful stop first; a group already gone or slow to go is then killed outright.
        with contextlib.suppress(subprocess.TimeoutExpired, ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):  # nothing left of the group: already stopped
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()
        self.proc = None
