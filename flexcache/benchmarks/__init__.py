"""Benchmarks that ship with the package, so `flexcache bench ...` runs anywhere."""
