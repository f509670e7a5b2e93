"""Emulated FiPy devices: the per-device wake-cycle logic and the process that hosts many of them."""
