"""HyperAlloc host tooling (Python 3 standard library only).

qmp:     a small QMP client for tests, demos and benchmarks;
vm:      the launcher: boots a guest kernel in our QEMU (KVM where it works,
         TCG otherwise) and talks to it over the serial console;
hostmem: host RSS of the QEMU process, now or sampled over time.
"""
