"""Check docs/results.md against a run directory: every file, CSV column and JSON key must be described.

:func:`undocumented` lists what a run directory holds that the document does not mention. The unit
tests run it on a fixture run, the real-network tests on a fresh run, so the document cannot fall
behind what ``qiot run``, ``qiot analyze``, ``qiot plot`` and ``qiot report`` write.

How the document is read (the conventions docs/results.md follows):

- **files**: the fenced block under ``## Layout`` lists one path pattern per line (first word, relative
  to RUN_DIR); every file of the run must match one;
- **sections**: a heading naming one or more files (``### <mode>/summary.csv``) describes them up to
  the next heading; its *mentions* are the names in its code spans and in the first cell of its table
  rows (a bare ``<word>`` counts only in a table row). Every CSV column of a file, and every key
  path of a JSON file, must match a mention of one of the file's sections;
- **patterns**: ``<word>`` stands for one name (a mode, a device, a daemon), ``*`` for any run of
  characters within a name, ``{a,b}`` for either; JSON key paths are dotted, ``[]`` marks the items
  of a list (``faults[].kind``), and ``key.*`` covers everything below ``key`` (a subtree described
  elsewhere, e.g. the scenario).

Hand-written, small: no Markdown library is needed to find headings, code spans and table rows, and
the patterns are turned into regular expressions directly.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import harness

#: The result-format document of this checkout.
DOC_PATH = Path(harness.__file__).resolve().parent.parent / "docs" / "results.md"
#: The heading whose fenced block lists every file.
LAYOUT_HEADING = "Layout"

_HEADING = re.compile(r"^(#{2,4})\s+(.*)$")
_CODE_SPAN = re.compile(r"`([^`]+)`")
_FILE_TOKEN = re.compile(r"\.(csv|json)$")
_BARE_PLACEHOLDER = re.compile(r"<[^>]*>|\*")


@dataclass
class Section:
    """One heading of the document: the file patterns it names and the names it mentions."""

    title: str
    files: list[re.Pattern] = field(default_factory=list)
    mentions: list[str] = field(default_factory=list)


@dataclass
class ResultsDoc:
    """What :func:`parse_doc` found: the Layout file patterns and the sections."""

    layout: list[tuple[str, re.Pattern]]
    sections: list[Section]

    def sections_for(self, relpath: str) -> list[Section]:
        """The sections whose heading names ``relpath``."""
        return [s for s in self.sections if any(p.fullmatch(relpath) for p in s.files)]


def split_names(text: str) -> list[str]:
    """Split on whitespace and commas outside ``{...}``, strip surrounding punctuation."""
    names, current, depth = [], [], 0
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}":
            depth = max(0, depth - 1)
        if depth == 0 and (char.isspace() or char == ","):
            names.append("".join(current))
            current = []
        else:
            current.append(char)
    names.append("".join(current))
    return [n.strip("()\"':;") for n in names if n.strip("()\"':;")]


def pattern_regex(pattern: str, separator: str) -> re.Pattern:
    """The regular expression of a documented name pattern (module docstring); ``separator`` is the
    character a ``<word>`` or ``*`` may not cross (``/`` in paths, ``.`` in key paths)."""
    out, i = [], 0
    one = f"[^{re.escape(separator)}]"
    while i < len(pattern):
        char = pattern[i]
        if char == "<" and ">" in pattern[i:]:
            end = pattern.index(">", i)
            out.append(f"{one}+")
            i = end + 1
            continue
        if char == "{" and "}" in pattern[i:]:
            end = pattern.index("}", i)
            out.append("(?:" + "|".join(re.escape(a) for a in pattern[i + 1:end].split(",")) + ")")
            i = end + 1
            continue
        out.append(f"{one}*" if char == "*" else re.escape(char))
        i += 1
    return re.compile("".join(out))


def parse_doc(text: str) -> ResultsDoc:
    """Find the Layout file patterns and the per-file sections of the document ``text``."""
    layout: list[tuple[str, re.Pattern]] = []
    sections: list[Section] = []
    bodies: list[list[str]] = []
    in_fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            if sections and sections[-1].title == LAYOUT_HEADING and line.strip():
                first = line.split()[0]
                if first != "RUN_DIR/":
                    layout.append((first, pattern_regex(first, "/")))
            continue
        heading = _HEADING.match(line)
        if heading:
            title = heading.group(2).strip()
            sections.append(Section(title, [pattern_regex(name, "/") for name in split_names(title.replace("`", " "))
                                            if _FILE_TOKEN.search(name)]))
            bodies.append([])
        elif bodies:
            bodies[-1].append(line)
    for section, body in zip(sections, bodies):
        # A code span may wrap onto the next line (never across a paragraph).
        for paragraph in "\n".join(body).split("\n\n"):
            for span in _CODE_SPAN.findall(paragraph):
                # A bare placeholder in prose (`<capture>`: ...) explains a name; only a table row
                # may use one as a key of its own (hosts.json's `<host>`).
                section.mentions += [name for name in split_names(span) if not _BARE_PLACEHOLDER.fullmatch(name)]
        for line in body:
            if line.startswith("|") and not set(line) <= set("|-: "):
                section.mentions += split_names(line.strip("|").split("|")[0].replace("`", " "))
    return ResultsDoc(layout, sections)


def json_key_paths(value, prefix: str = "") -> list[tuple[str, list[str]]]:
    """Every key path of a JSON value (``a.b`` for nested objects, ``a[].b`` inside lists of
    objects), each with the key paths directly below it (empty for a scalar or an empty container)."""
    children: dict[str, list[str]] = {}
    order: list[str] = []

    def walk(item, path: str) -> list[str]:
        below: list[str] = []
        if isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else str(key)
                if child_path not in children:
                    children[child_path] = []
                    order.append(child_path)
                children[child_path] += [p for p in walk(child, child_path) if p not in children[child_path]]
                below.append(child_path)
        elif isinstance(item, list):
            for element in item:
                below += [p for p in walk(element, f"{path}[]") if p not in below]
        return below

    walk(value, prefix)
    return [(path, children[path]) for path in order]


def _mention_covers(mention: str, path: str) -> bool:
    """Whether one documented key pattern describes ``path`` (``key.*``: the key and all below it)."""
    if not mention.endswith(".*"):
        return bool(pattern_regex(mention, ".").fullmatch(path))
    base = mention[:-2]
    regexes = [pattern_regex(base, ".")] + ([pattern_regex(base[:-2], ".")] if base.endswith("[]") else [])
    cuts = [i for i in range(1, len(path) + 1) if path[i:i + 1] in (".", "[", "")]
    return any(regex.fullmatch(path[:i]) for regex in regexes for i in cuts)


def undocumented_keys(data, mentions: list[str]) -> list[str]:
    """The key paths of the JSON value ``data`` that ``mentions`` do not describe. An object or list
    counts as described when a mention names it or describes a key below it."""
    paths = json_key_paths(data)
    below = dict(paths)
    memo: dict[str, bool] = {}

    def described(path: str) -> bool:
        if path not in memo:
            memo[path] = any(_mention_covers(m, path) for m in mentions) or any(described(c) for c in below[path])
        return memo[path]

    return [path for path, _ in paths if not described(path)]


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle), [])


def undocumented(run_dir: str | Path, doc_path: str | Path = DOC_PATH) -> list[str]:
    """What ``run_dir`` holds that ``doc_path`` does not describe, one line each: ``file <path>``,
    ``column <file>: <name>``, ``key <file>: <key path>``, ``unreadable <file>: <why>``.
    An empty list means the document covers the run directory completely."""
    root, doc = Path(run_dir), parse_doc(Path(doc_path).read_text(encoding="utf-8"))
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    missing: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relpath = path.relative_to(root).as_posix()
        if not any(regex.fullmatch(relpath) for _, regex in doc.layout):
            missing.append(f"file {relpath}")
        if path.suffix not in (".csv", ".json"):
            continue
        mentions = [m for section in doc.sections_for(relpath) for m in section.mentions]
        note = "" if mentions else " (no section describes this file)"
        try:
            if path.suffix == ".csv":
                kind = "column"
                found = [n for n in _csv_header(path) if not any(pattern_regex(m, "/").fullmatch(n) for m in mentions)]
            else:
                found, kind = undocumented_keys(json.loads(path.read_text(encoding="utf-8")), mentions), "key"
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
            missing.append(f"unreadable {relpath}: {exc}")
            continue
        missing += [f"{kind} {relpath}: {name}{note}" for name in found]
    return missing
