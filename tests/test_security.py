"""Security of the Ray instance the library starts (issue 7, point 6).

A subprocess starts Ray exactly as ``ray-robust train --engine ray`` does (``RayTrainer``
without an address: a new local instance, dashboard off, usage statistics off, token
authentication left at Ray 2.60's default) and keeps it up while this test reads which TCP
ports its processes listen on, from ``/proc/net/tcp{,6}`` and ``/proc/<pid>/fd`` (no psutil).

Measured facts (Ray 2.60, one node, a server actor and one worker actor; the test prints the
table): nothing is loopback-only. On all interfaces (``::``, dual-stack): the GCS server (its
port is the address's), the raylet's two ports (node manager, object manager), and one gRPC
port per core worker (the driver and every actor). On the node's IP (the address Ray picked,
here the container's external interface): the runtime-env agent. No dashboard (8265), no
metrics HTTP port while the dashboard is off. Ray's token authentication is on, but a
firewall must still close every one of these ports to untrusted networks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, os, sys
from ray_robust import Config, load_problem
from ray_robust.engines.ray_engine import RayTrainer
import ray
from ray._private.authentication.authentication_utils import is_token_auth_enabled
from ray._common.usage import usage_lib

cfg = Config(n_workers=2, rounds=1)
with RayTrainer(load_problem(cfg), actors=1) as trainer:
    trainer(cfg)
    info = dict(
        gcs_address=ray.get_runtime_context().gcs_address,
        token_auth=bool(is_token_auth_enabled()),
        usage_stats=bool(usage_lib.usage_stats_enabled()),
        dashboard_url=ray._private.worker.get_dashboard_url(),
        pid=os.getpid(),
    )
    print("READY " + json.dumps(info), flush=True)
    sys.stdin.read()  # stay up until the test closes stdin
"""


def _listening(proc_file: str) -> dict[int, tuple[str, int]]:
    """inode → (local address, port) of the LISTEN sockets in /proc/net/tcp or tcp6."""
    out = {}
    for line in Path(proc_file).read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "0A":  # TCP_LISTEN
            continue
        addr_hex, port_hex = fields[1].split(":")
        if len(addr_hex) == 8:
            addr = ".".join(str(int(addr_hex[i:i + 2], 16)) for i in (6, 4, 2, 0))
        else:
            addr = "::" if set(addr_hex) == {"0"} else (
                "::1" if addr_hex == "0" * 24 + "01000000" else addr_hex)
        out[int(fields[9])] = (addr, int(port_hex, 16))
    return out


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        pid, ppid = int(text.split()[0]), int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo.extend(children.get(pid, []))
    return out


def _process_name(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return "?"
    name = os.path.basename(cmd.split()[0]) if cmd else "?"
    return re.sub(r"^ray::", "ray::", name)


def _sockets_of(pids: set[int]) -> list[dict]:
    listening = {**_listening("/proc/net/tcp"), **_listening("/proc/net/tcp6")}
    rows = []
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            m = re.fullmatch(r"socket:\[(\d+)\]", target)
            if m and int(m.group(1)) in listening:
                addr, port = listening[int(m.group(1))]
                rows.append(dict(pid=pid, process=_process_name(pid), address=addr, port=port))
    return sorted({(r["port"], r["address"], r["process"], r["pid"]): r for r in rows}.values(),
                  key=lambda r: r["port"])


@pytest.fixture(scope="module")
def library_ray(data_dir, ray_session):
    """A local Ray started the library's way, in a subprocess, while the session's Ray runs
    (so that 'a new local instance, never join one implicitly' is put to the test)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE")}
    proc = subprocess.Popen([sys.executable, "-c", PROBE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY "), proc.stderr.read()[-3000:]
        info = json.loads(line[len("READY "):])
        info["sockets"] = _sockets_of(_descendants(proc.pid))
        yield info
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def test_library_ray_keeps_token_auth_and_turns_off_dashboard_and_usage_stats(library_ray,
                                                                               ray_session):
    assert library_ray["token_auth"] is True  # Ray 2.60's default, never switched off
    assert library_ray["usage_stats"] is False
    assert not library_ray["dashboard_url"]
    # a new instance: it did not join the session's (or any other) running Ray implicitly
    assert library_ray["gcs_address"] != ray_session.get_runtime_context().gcs_address


def test_what_the_local_instance_listens_on(library_ray):
    sockets = library_ray["sockets"]
    print("\nport   address          process")
    for s in sockets:
        print(f"{s['port']:<6} {s['address']:<16} {s['process']}")
    assert sockets, "no listening socket found for the Ray processes"
    gcs_port = int(library_ray["gcs_address"].rsplit(":", 1)[1])
    by_port = {s["port"]: s for s in sockets}
    assert gcs_port in by_port and "gcs_server" in by_port[gcs_port]["process"]
    # The dashboard (HTTP 8265) is off: no process of this instance listens there.
    assert 8265 not in by_port
    wildcard = {s["port"] for s in sockets if s["address"] in ("0.0.0.0", "::")}
    loopback = {s["port"] for s in sockets if s["address"].startswith("127.")
                or s["address"] == "::1"}
    # Ray 2.60 binds GCS, raylet and worker gRPC ports on every interface even though the node
    # address is local: these are what a firewall must close to untrusted networks.
    assert gcs_port in wildcard
    assert any("raylet" in s["process"] for s in sockets if s["port"] in wildcard)
    assert any(s["process"].startswith("ray::") for s in sockets if s["port"] in wildcard)
    node_ip = library_ray["gcs_address"].rsplit(":", 1)[0]
    on_node_ip = {s["port"] for s in sockets if s["address"] == node_ip}
    # The rest (the runtime-env agent) binds the node's own IP, also reachable from the network.
    assert wildcard | loopback | on_node_ip == set(by_port)
    assert not loopback  # measured: nothing of this instance is loopback-only


def test_library_never_switches_token_auth_off():
    """No code path of the library sets RAY_AUTH_MODE (or passes an auth option) itself."""
    for path in (ROOT / "ray_robust").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"RAY_AUTH_MODE|auth_mode|_system_config", text), path
