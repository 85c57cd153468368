"""cara.codecs."""
