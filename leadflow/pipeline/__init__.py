"""The pipeline engine: the one definition of a run (``engine``: its steps and flows, walked
by a runner) and the concepts its steps are made of: scoring, stage decisions (``stages``)
and moves, cadences, business time, events, suppression, config changes and run records,
the dry run (``planning``).

Submodules are imported by name; this package imports nothing.
"""
