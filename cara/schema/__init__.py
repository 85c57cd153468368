"""cara.schema: .capnp text to schema nodes."""
