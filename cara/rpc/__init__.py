"""cara.rpc."""
