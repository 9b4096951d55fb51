"""Tidings apps run as real worker processes by the fault-injection tests."""
