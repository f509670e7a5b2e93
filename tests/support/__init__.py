"""Test-only stand-ins shared by the unit tests and the benchmarks (never imported by the product)."""
