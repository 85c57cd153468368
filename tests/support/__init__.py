"""Helpers shared by the test suite (oracles built on the reference tools, corpus paths)."""
