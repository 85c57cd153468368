"""cara.runtime."""
