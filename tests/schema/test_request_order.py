"""The order capnp writes a request's nodes and source info in (cara/schema/request_order.py).

The end-to-end check is tests/cli/test_compile_cmd.py (``-o-`` byte-identical to capnp's for
the corpus and the snippets); here the replay of libstdc++'s ``std::unordered_map`` is held to
the real one, compiled with the system's C++ compiler.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from cara.schema.request_order import unordered_map_order

_PROGRAM = r"""
#include <cstdint>
#include <iostream>
#include <unordered_map>
int main() {
  std::unordered_map<uint64_t, int> map;
  uint64_t key;
  while (std::cin >> key) map.insert(std::make_pair(key, 0));
  for (auto& entry: map) std::cout << entry.first << "\n";
}
"""


@pytest.fixture(scope="module")
def real_unordered_map(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++) to build the libstdc++ reference")
    directory = tmp_path_factory.mktemp("umap")
    (directory / "umap.cc").write_text(_PROGRAM)
    subprocess.run([compiler, "-O1", "-o", str(directory / "umap"), str(directory / "umap.cc")],
                   check=True, capture_output=True)
    return directory / "umap"


@pytest.mark.parametrize("size", [0, 1, 12, 13, 14, 29, 30, 200, 3000])
def test_same_order_as_libstdcxx(real_unordered_map: Path, size: int) -> None:
    rng = random.Random(size)
    keys = [rng.getrandbits(64) for _ in range(size)]
    keys += keys[: size // 3]  # repeated keys are ignored
    keys += [rng.randrange(50) for _ in range(size // 4)]  # small keys share buckets
    proc = subprocess.run([str(real_unordered_map)], input="\n".join(map(str, keys)),
                          capture_output=True, text=True, check=True)
    assert unordered_map_order(keys) == [int(line) for line in proc.stdout.split()]
