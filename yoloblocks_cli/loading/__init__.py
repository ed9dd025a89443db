"""Loading and building: block specs, size grammar, YAML models and their dialects, targets.

Turns what the user typed (``C2f``, ``pkg.mod:Class``, ``file.py:Class``, ``yolov8n``,
``model.yaml``, ``64x80x80``) into modules and shapes. May import ``reporting`` and the
``blocks`` library; never ``measuring``, ``tracing``, ``checks``, ``catalog`` or ``commands``.
"""
