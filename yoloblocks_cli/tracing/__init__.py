"""Tracing: sweeps of sizes, batches and modes, probes, failure localisation and causes.

``tracer`` hooks modules and turns an exception into layer, shape, file:line; ``hints``
names the cause; ``probes`` runs one configuration; ``run`` sweeps; ``render`` prints.
May import ``measuring``, ``loading`` and ``reporting``; never ``checks``, ``catalog`` or
``commands``.
"""
