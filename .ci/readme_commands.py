"""Prints one of the README's two Quick-start commands: `main` (the demo) or `test`.

The Quick start section holds exactly two ```bash blocks of one command each: the one that
installs ".[test]" runs the tests, the other installs the package and runs the main job.
`.ci/run` runs the test command as written; tests/test_readme.py checks the shape.
"""

import pathlib
import re
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def quick_start_commands(text: str) -> dict[str, str]:
    section = re.search(r"^## Quick start\n(.*?)^## ", text, flags=re.S | re.M)
    if section is None:
        raise SystemExit("README.md has no '## Quick start' section")
    blocks = re.findall(r"^```bash\n(.*?)^```", section.group(1), flags=re.S | re.M)
    commands = [b.strip() for b in blocks]
    if len(commands) != 2 or any("\n" in c for c in commands):
        raise SystemExit(f"README Quick start must hold two one-line bash commands: {commands}")
    test = [c for c in commands if '".[test]"' in c]
    main = [c for c in commands if '".[test]"' not in c]
    if len(test) != 1 or len(main) != 1:
        raise SystemExit(f"README Quick start: expected one test and one main command: {commands}")
    return {"main": main[0], "test": test[0]}


if __name__ == "__main__":
    print(quick_start_commands(README.read_text())[sys.argv[1]])
