"""Load: from a target and settings to a :class:`~pytest_mlload.results.CapacityResult`.

``engine`` (parent side) starts ``driver`` (the only module that imports Locust) as a child
process; ``controller`` decides the user count from each measured window; ``openloop`` runs
the constant-arrival phases; ``modes`` plans the parts a test's modes ask for.
"""
