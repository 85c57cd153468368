"""cara.codegen."""
