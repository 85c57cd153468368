# Annotations understood by cara, the pythonic Cap'n Proto library.
#
# Import with:  using Cara = import "/capnp/cara.capnp";
# cara bundles this file with its standard schemas, so the import works without a Cap'n Proto
# installation. Other Cap'n Proto tools see an ordinary annotation and ignore it.

@0xbf48045de8b5906b;

annotation registerGlobally @0xebd6c4912189be2c (struct, interface) :Void;
# Adds the annotated struct or interface to cara's global type registry, keyed by its type id,
# when its schema is loaded, so code that only knows a type id can find the Python type.
