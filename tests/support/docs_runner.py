"""Run every example of a ``docs/*.md`` page, as a reader would.

* a ``capnp`` block whose first line is ``# name.capnp`` is written to a fresh directory;
* ``python`` blocks run there in one shared namespace: doctest for blocks with ``>>>``, plain
  execution otherwise;
* ``sh``/``console`` blocks whose first line starts with ``$ `` are run with bash, and their
  output compared with what follows each command (doctest's ELLIPSIS rules; an empty expected
  output means "exits with 0").

A block whose opening fence says ``no-check`` is skipped. Usage: ``python docs_runner.py PAGE``;
exit status 1 when anything fails, with each failure printed.
"""

from __future__ import annotations

import doctest
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback

BLOCK = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def run_page(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    workdir = tempfile.mkdtemp(prefix="cara-docs-")
    os.chdir(workdir)
    sys.path.insert(0, workdir)
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    namespace: dict[str, object] = {"__name__": "__main__"}
    parser = doctest.DocTestParser()
    failures = 0
    for match in BLOCK.finditer(text):
        lang, body = match.group(1), match.group(2)
        line = text[: match.start()].count("\n") + 1
        first = body.splitlines()[0] if body.strip() else ""
        if "no-check" in match.group(0).splitlines()[0]:
            continue
        if lang == "capnp" and re.match(r"# [\w/.-]+\.capnp$", first):
            name = first[2:]
            os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
            with open(name, "w", encoding="utf-8") as out:
                out.write(body)
        elif lang in ("python", "py"):
            if ">>>" in body:
                test = parser.get_doctest(body, namespace, f"{path}:{line}", path, line)
                runner = doctest.DocTestRunner(optionflags=FLAGS)
                runner.run(test, clear_globs=False)
                namespace.update(test.globs)
                failures += runner.failures
            else:
                try:
                    exec(compile(body, f"{path}:{line}", "exec"), namespace)
                except Exception:
                    traceback.print_exc()
                    print(f"FAIL python block at {path}:{line}")
                    failures += 1
        elif lang in ("sh", "console") and first.startswith("$ "):
            for chunk in re.split(r"^\$ ", body, flags=re.M)[1:]:
                cmd, _, expected = chunk.partition("\n")
                while cmd.endswith("\\"):
                    more, _, expected = expected.partition("\n")
                    cmd = cmd[:-1] + more
                proc = subprocess.run(cmd, shell=True, capture_output=True, text=True,
                                      executable="/bin/bash")
                got = proc.stdout + proc.stderr
                want = expected.rstrip("\n")
                if want == "":
                    ok = proc.returncode == 0
                else:
                    ok = doctest.OutputChecker().check_output(want + "\n", got, FLAGS)
                if not ok:
                    failures += 1
                    print(f"FAIL sh at {path}:{line}: {cmd}\n--- expected\n{want}\n--- got\n{got}")
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"{path}: {'OK' if not failures else f'{failures} failure(s)'}")
    return failures


if __name__ == "__main__":
    sys.exit(1 if sum(run_page(os.path.abspath(p)) for p in sys.argv[1:]) else 0)
