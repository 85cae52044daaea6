"""Test harnesses shipped with the package, not part of the product's decisions.

``demo`` (an inference server with known capacity), ``simulate`` (a simulated service and
clock for the controller), ``prometheus`` (a real Prometheus process on loopback) and
``fakes`` (in-memory stand-ins for I/O edges).
"""
