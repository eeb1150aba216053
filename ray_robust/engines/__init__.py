"""Engines: who computes the honest workers' messages. Numerics live in ``ray_robust.core``.

``local`` (:mod:`.local`): every worker in-process, in one batched numpy call per round — the
reference semantics. ``ray`` (:mod:`.ray_engine`): worker actors hold the shards and a server
actor runs the loop; same θ, bit for bit. Importing this package does not import Ray.
"""

#: the engine names every entry point accepts (``train``, the CLI, studies)
ENGINES = ("local", "ray")
