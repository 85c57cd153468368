@0xd508eebdc2dc42b8;
struct P { x @0 :Int8; }
struct S { a @0 :AnyPointer = .c; }
const c :P = (x = 1);
