"""Checks: ``yb check`` configuration, budgets, baselines, shards and the pytest helper.

The top of the engine: composes measuring and tracing into pass/fail findings. May import
every other engine layer; never ``catalog`` or ``commands``.
"""
