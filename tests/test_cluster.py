"""The Ray engine on a real multi-node cluster simulated on this machine (issue 3).

``ray.cluster_utils.Cluster`` starts a head and two worker nodes, as Ray's own tests do. It
cannot share the session's Ray instance, so the cluster runs in a subprocess (this file run as
a script) with its own ``RAY_TMPDIR``: the cluster's address file then never reaches the
default ``/tmp/ray``, where another process's ``ray.init()`` would find it and join it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROUNDS = 30


def _cluster_main(out: Path) -> None:
    """Head + 2 worker nodes (1 CPU each); the engine with actors='auto' → 3 worker actors."""
    import ray
    from ray.cluster_utils import Cluster

    from ray_robust.api import load_problem, train
    from ray_robust.config import Config
    from ray_robust.engines.ray_engine import RayTrainer
    from ray_robust.reproduce import PAPER_SETTING

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        cfg = Config.from_dict({**PAPER_SETTING, "rounds": ROUNDS, "seed": 3, "alpha": 0.15,
                                "attack": "aggressive", "algorithm": "alg2"})
        problem = load_problem(cfg)
        with RayTrainer(problem, actors="auto") as trainer:
            hist = trainer(cfg)
            placement = trainer.placement
        local = train(cfg, problem=problem)
        out.write_text(json.dumps({
            "nodes": nodes,
            "placement": placement,
            "theta_ray": hist.theta.tolist(),
            "theta_local": local.theta.tolist(),
            "metrics_equal": bool(hist.metrics.equals(local.metrics)),
        }))
        ray.shutdown()
    finally:
        cluster.shutdown()


@pytest.mark.slow
def test_engine_on_a_three_node_cluster(data_dir, tmp_path):
    out = tmp_path / "cluster.json"
    ray_tmp = tempfile.mkdtemp(prefix="rr-", dir="/tmp")  # short: Ray's socket paths are long
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=ray_tmp, RAY_ROBUST_DATA_DIR=str(data_dir),
               RAY_USAGE_STATS_ENABLED="0")
    try:
        proc = subprocess.run([sys.executable, __file__, str(out)], capture_output=True,
                              text=True, env=env, timeout=300)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-4000:]
    res = json.loads(out.read_text())
    assert len(res["nodes"]) == 3
    used = [p["node_id"] for p in res["placement"]]
    assert len(used) == 3 and set(used) <= set(res["nodes"])
    assert len(set(used)) == 3, f"the 3 worker actors are not on 3 nodes: {used}"
    assert sorted(w for p in res["placement"] for w in p["workers"]) == list(range(20))
    # Floats round-trip exactly through JSON: the same θ, bit for bit, as in-process.
    np.testing.assert_array_equal(np.array(res["theta_ray"]), np.array(res["theta_local"]))
    assert res["metrics_equal"]


if __name__ == "__main__":
    _cluster_main(Path(sys.argv[1]))
