# Annotations understood by cara, the pythonic Cap'n Proto library.
#
# Import with:  using Cara = import "/capnp/cara.capnp";
# cara bundles this file with its standard schemas, so the import works without a Cap'n Proto
# installation. Other Cap'n Proto tools see an ordinary annotation and ignore it.

@0xbf48045de8b5906b;

annotation registerGlobally @0xebd6c4912189be2c (struct, interface) :Void;
# Adds the annotated struct or interface to cara's global type registry, keyed by its type id,
# when its schema is loaded, so code that only knows a type id can find the Python type.

annotation idempotent @0x911365c837a1b943 (method) :Void;
# The method may run more than once for one call with the same effect as once (a read, a
# "set x to y"): a transport that loses the worker running it may retry it elsewhere. cara's
# NATS transport retries such calls on the service's bootstrap capability on another worker;
# other calls are at most once.
