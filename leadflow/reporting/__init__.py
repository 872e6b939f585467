"""Pipeline metrics and reports; ``leadflow.report`` is the public facade.

Every metric is computed by the database (GROUP BY, window functions) and only aggregated
rows come back, so a report over millions of transitions never loops over leads in Python.
"""
