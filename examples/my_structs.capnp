# The seed's struct example (cara 0.10.3 README), with the file id capnp requires.
@0xd3a8a8f4c2b1e001;

struct MyStruct {
    field @0 :Text;
    nested @1 :NestedStruct;
    struct NestedStruct {
        integer @0 :Int32;
    }
}
