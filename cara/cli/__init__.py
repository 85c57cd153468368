"""cara.cli."""
