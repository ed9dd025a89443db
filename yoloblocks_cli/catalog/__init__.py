"""The block catalog: every registered block measured (params, FLOPs, scaling, trace status).

Reads the ``blocks`` registry and measures through ``measuring`` and ``tracing``; renders
the ``docs/blocks.md`` page. May import every engine layer but ``checks`` and ``commands``.
"""
