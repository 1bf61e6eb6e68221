"""The runtime image's requirements: requirements.txt without what only the embedded default uses.

fakeredis is the in-process Redis stand-in of `make run` (no REDIS_URL); lupa (its Lua scripting)
and sortedcontainers come with it and serve nothing else. The image always runs against a real
Redis, so it leaves the three out. requirements.txt keeps them for `make run`, and the Dockerfile's
test stage installs them back (requirements-dev.txt includes requirements.txt).

    python deploy/runtime_requirements.py requirements.txt > requirements-runtime.txt

prints requirements.txt without those lines, and fails if one of the three is no longer named
there: a rename would otherwise quietly put it back into the image.

    python deploy/runtime_requirements.py --check requirements.txt

also walks what the remaining requirements need, as this environment has them installed (the
project's .venv), and fails naming any that still needs one of the three, or something the list
does not pin: the image installs with --no-index from wheels of that list alone. Only the standard
library is used without --check (the Dockerfile's builder runs it on a bare python image).
"""

import re
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

EMBEDDED_ONLY = frozenset({"fakeredis", "lupa", "sortedcontainers"})
NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str | None:
    """The project a requirements line names, or None for a blank line, a comment or an option."""
    text = line.split("#", 1)[0].strip()
    if not text or text.startswith("-"):
        return None
    match = NAME.match(text)
    if match is None:
        raise SystemExit(f"error: cannot read a project name in {line.strip()!r}")
    return canonical(match.group(1))


def runtime_lines(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    named = {requirement_name(line) for line in lines}
    if missing := sorted(EMBEDDED_ONLY - named):
        raise SystemExit(f"error: {path} no longer names {', '.join(missing)}: update EMBEDDED_ONLY in {__file__}")
    return [line for line in lines if requirement_name(line) not in EMBEDDED_ONLY]


def check(lines: list[str]) -> list[str]:
    """What is wrong with `lines` as the image's whole set of requirements, judged by the installed metadata."""
    from packaging.requirements import Requirement  # noqa: PLC0415  (--check only: the builder image lacks it)

    kept = [Requirement(line.split("#", 1)[0]) for line in lines if requirement_name(line)]
    pinned = {canonical(req.name) for req in kept}
    problems = []
    seen = set()
    queue = [(req, "requirements.txt") for req in kept]
    while queue:
        req, needed_by = queue.pop()
        name = canonical(req.name)
        if name in EMBEDDED_ONLY:
            problems.append(f"{needed_by} needs {req}, which the runtime image leaves out")
            continue
        if name not in pinned:
            problems.append(f"{needed_by} needs {req}, which requirements.txt does not pin")
            continue
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            problems.append(f"{req.name} is not installed here: run this in the project's .venv")
            continue
        extras = req.extras or {""}
        for text in dist.requires or []:
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate({"extra": extra}) for extra in extras):
                queue.append((dep, f"{dist.metadata['Name']} {dist.version}"))
    return problems


def main(argv: list[str]) -> int:
    checking = "--check" in argv
    paths = [arg for arg in argv if arg != "--check"]
    if len(paths) != 1:
        raise SystemExit("usage: python deploy/runtime_requirements.py [--check] requirements.txt")
    lines = runtime_lines(Path(paths[0]))
    if checking:
        if problems := check(lines):
            print("\n".join(f"error: {problem}" for problem in sorted(set(problems))), file=sys.stderr)
            return 1
        print(f"the runtime image's requirements need none of {', '.join(sorted(EMBEDDED_ONLY))}")
        return 0
    print(f"# {paths[0]} without {', '.join(sorted(EMBEDDED_ONLY))} (deploy/runtime_requirements.py)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
