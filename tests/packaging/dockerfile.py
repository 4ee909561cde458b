"""The Dockerfile read as the builder reads it, so a test can do its wheel steps without a daemon.

`instructions` joins continued lines and splits the file into stages; `lay_out_context` copies
exactly what the build stage's COPY lines take from the build context (less .dockerignore) into a
directory; `wheel_commands` gives the RUN lines that build and install the wheel, for a test to
run with the image's paths mapped onto its own directories.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Instruction:
    stage: int
    keyword: str
    flags: tuple[str, ...]  # --from=build, --mount=..., as written
    args: tuple[str, ...]   # exec form or shell words; RUN keeps its whole command as one string


def instructions(text: str) -> list[Instruction]:
    """Every instruction, continuation lines joined and comments dropped, tagged with its stage."""
    out: list[Instruction] = []
    stage = -1
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, rest = logical.partition(" ")
        keyword = keyword.upper()
        stage += keyword == "FROM"
        flags: list[str] = []
        body = rest.strip()
        while keyword in ("COPY", "ADD", "RUN") and body.startswith("--"):  # leading flags only
            flag, _, body = body.partition(" ")
            flags.append(flag)
            body = body.strip()
        if keyword == "RUN":
            args: tuple[str, ...] = (body,)
        elif body.startswith("["):
            args = tuple(json.loads(body))
        else:
            args = tuple(shlex.split(body))
        out.append(Instruction(stage, keyword, tuple(flags), args))
        logical = ""
    return out


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match plus `**`) as a regular expression."""
    out, index = "", 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out, index = out + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return re.compile(out)


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `relative` out: the last pattern matching it or a parent decides."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:count]) for count in range(1, len(parts) + 1)]
    verdict = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = _pattern(str(PurePosixPath(raw.lstrip("!").lstrip("/"))))
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            verdict = not negate
    return verdict


def dockerignore(root: Path = ROOT) -> list[str]:
    path = root / ".dockerignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def context_files(root: Path = ROOT) -> list[str]:
    """The build context as the daemon receives it: every file not kept out by .dockerignore."""
    patterns = dockerignore(root)
    prune = not any(pattern.startswith("!") for pattern in patterns)  # no exception can reach inside
    files = []
    for directory, subdirectories, names in os.walk(root):
        if prune:
            subdirectories[:] = [sub for sub in subdirectories if not ignored(
                os.path.relpath(os.path.join(directory, sub), root).replace(os.sep, "/"), patterns)]
        for name in names:
            relative = os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/")
            if not ignored(relative, patterns):
                files.append(relative)
    return sorted(files)


def lay_out_context(build: list[Instruction], destination: Path, root: Path = ROOT) -> list[str]:
    """Copy what the stage's COPY lines take from the context into `destination`, which stands for
    the stage's WORKDIR; returns the copied files, relative to it."""
    available = context_files(root)
    workdir = PurePosixPath("/")
    copied: list[str] = []
    for instruction in build:
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.args[0]
        if instruction.keyword not in ("COPY", "ADD") or any(f.startswith("--from") for f in instruction.flags):
            continue
        *sources, target = instruction.args
        target_dir = workdir / target
        assert target_dir.is_relative_to(workdir), f"{instruction} copies outside the WORKDIR"
        base = destination / target_dir.relative_to(workdir)
        for source in sources:
            source = str(PurePosixPath(source))
            for relative in available:
                if source == ".":
                    inside = relative
                elif relative == source:
                    inside = PurePosixPath(relative).name
                elif relative.startswith(source + "/"):
                    inside = relative[len(source) + 1:]
                else:
                    continue
                (base / inside).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / relative, base / inside)
                copied.append(str((base / inside).relative_to(destination)))
    return sorted(copied)


def wheel_commands(steps: list[Instruction], paths: dict[str, str], programs: dict[str, list[str]]) -> list[list[str]]:
    """The RUN lines that build or install the wheels (those naming /wheels), as argument lists with
    the image's paths replaced by `paths`, a leading program by `programs` (`pip` -> python -m pip),
    and `--no-cache-dir` dropped (a test reuses pip's cache)."""
    commands = []
    for instruction in steps:
        if instruction.keyword != "RUN" or "/wheels" not in instruction.args[0]:
            continue
        for command in instruction.args[0].split("&&"):
            words = []
            for word in shlex.split(command):
                if word == "--no-cache-dir":
                    continue
                for image_path, local in paths.items():
                    if word == image_path or word.startswith(image_path + "/"):
                        word = local + word[len(image_path):]
                words.append(word)
            commands.append(programs.get(words[0], words[:1]) + words[1:])
    return commands
