"""Measuring: parameters, FLOPs (three counters), latency and peak memory of one target.

``engine.measure(target, shape, plan)`` is the one function every command measures
through; ``flops``, ``bench`` and ``layer_profile`` are its parts, ``measure`` interleaves
several targets, ``scaling`` fits growth laws over sizes. May import ``loading`` and
``reporting``; never ``tracing``, ``checks``, ``catalog`` or ``commands``.
"""
