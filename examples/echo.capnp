# The interfaces of cara's original pseud example (SimpleEcho, BackAndForth), with the ids and
# ordinals Cap'n Proto requires. Used by examples/rpc_asyncio.py.
@0xeb0462b5c28c80d5;

interface SimpleEcho {
    echo @0 (text :Text) -> (text :Text);
}

interface BackAndForth {
    interface Callback {
        callback @0 (callback :Callback) -> (result :Text);
    }
    callMeMaybe @0 (callback :Callback) -> ();
    otherFunc @1 () -> ();
}
