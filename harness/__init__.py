"""qiot harness: scenario loading, emulated clock, process management, topology wiring and results.

Pure cores (QKD model, key manager, device/energy logic, analysis) import nothing from Mininet,
so they run and are tested without root; the network edge (topologies/, harness.network) calls them.
"""

__version__ = "0.1.0"
