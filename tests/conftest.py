"""Settings for every test.

Hypothesis's default 200 ms deadline per example measures the machine, not the code: on this shared
2-CPU VM a busy neighbour made a 40-step RIB example miss it (a DeadlineExceeded that says nothing
about correctness). Speed is measured by ``benchmarks/``; tests check behaviour, so no deadline.
"""

from hypothesis import settings

settings.register_profile("pop-router", deadline=None)
settings.load_profile("pop-router")
