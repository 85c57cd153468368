@0xd508eebdc2dc42b8;
struct S { g :group $x(1) 5 { } }
