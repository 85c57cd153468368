"""cara.transports."""
