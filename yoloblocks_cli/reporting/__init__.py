"""Reporting primitives: the JSON report envelope, atomic writes, consoles, JUnit, charts.

The lowest layer of the engine: it formats and writes what the others computed and
imports nothing from ``loading``, ``measuring``, ``tracing``, ``checks`` or ``catalog``
(only ``yoloblocks_cli.errors`` and ``yoloblocks_cli.device``). Renderers that know one
command's result live beside that result (``tracing.render``, ``catalog.render``,
``checks.markdown``).
"""
