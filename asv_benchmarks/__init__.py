"""asv benchmarks of sgconv: speed, memory and accuracy per backend, with baselines.

Run with asv (see asv.conf.json at the repository root); ``common`` holds the shared
helpers, ``numpy_floor`` is also a standalone script.
"""
