"""Engines: who computes the honest workers' messages. Numerics live in ``ray_robust.core``."""
