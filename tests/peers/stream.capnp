@0xc4b7e2a1d9f03a55;
# The streaming tests' schema: a Source opens Sinks that take a stream of chunks.

interface Sink {
  write @0 (chunk :Data) -> stream;
  # One chunk; a consumer that fails raises on the chunk numbered `failAt` (counted from 1).
  done @1 () -> (total :UInt64, count :UInt64, digest :Data);
  # Bytes and chunks received, and the SHA-256 of every byte in the order received.
}

interface Source {
  open @0 (delay :Float64, failAt :UInt64, hash :Bool = true) -> (sink :Sink);
  # A new sink that sleeps `delay` seconds per chunk (0: none); with `hash` false it only
  # counts (done() gives an empty digest): the benchmark's consumer, as light as a raw one.
}
