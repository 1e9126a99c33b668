"""HyperAlloc host tooling (Python 3 standard library only).

qmp: a small QMP client for tests, demos and benchmarks.
"""
