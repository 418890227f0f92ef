"""String constants of the pinned upstream sources (Go modules, Java sources jars)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from driftloop.annotations.keys import API_VERSION, KEY_NAME, KEY_PREFIX, KEYISH_CONST


class AnnotationSourcesMissing(FileNotFoundError):
    """The upstream sources were not fetched (``make setup``)."""


@dataclass(frozen=True)
class Constant:
    """One string constant of an upstream package."""

    area: str
    package: str
    """Package directory relative to the module root (Go) or the Java class name."""
    name: str
    value: str
    type: str = ""
    file: str = ""


@dataclass(frozen=True)
class AnnotationError:
    """An annotation/label key or value no pinned controller knows."""

    file: str
    where: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.key}: {self.message}"


# --------------------------------------------------------------------------- Go / Java constants

_GO_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"|`([^`]*)`')
_GO_IMPORT = re.compile(r'^\s*(?:([A-Za-z_]\w*|\.)\s+)?"([^"]+)"\s*$')
_GO_SPEC = re.compile(r"^\s*([A-Za-z_]\w*)(?:\s+([A-Za-z_][\w.]*))?\s*=\s*(.+?)\s*$")


def _strip_go_comment(line: str) -> str:
    out, quote = [], ""
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            out.append(c)
            if c == "\\" and quote == '"' and i + 1 < len(line):
                out.append(line[i + 1])
                i += 1
            elif c == quote:
                quote = ""
        elif c in '"`':
            quote = c
            out.append(c)
        elif line.startswith("//", i):
            break
        else:
            out.append(c)
        i += 1
    return "".join(out)


@dataclass
class _GoFile:
    package: str
    imports: dict[str, str] = field(default_factory=dict)
    specs: list[tuple[str, str, str]] = field(default_factory=list)
    """(name, type, expression) of every const spec with an explicit value."""


def parse_go(text: str) -> _GoFile:
    """The package name, imports and ``const`` specs of a Go file (and ``var`` blocks, whose
    string expressions are constants in all but name)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    lines = [_strip_go_comment(raw) for raw in text.splitlines()]
    package, imports = "", {}
    specs: list[tuple[str, str, str]] = []
    block = ""
    for line in lines:
        s = line.strip()
        if not s:
            continue
        if block:
            if s == ")":
                block = ""
                continue
            if block == "import":
                m = _GO_IMPORT.match(s)
                if m:
                    path = m.group(2)
                    imports[m.group(1) or path.rsplit("/", 1)[-1]] = path
            elif block in {"const", "var"}:
                m = _GO_SPEC.match(s)
                if m:
                    specs.append((m.group(1), m.group(2) or "", m.group(3)))
            continue
        if s.startswith("package "):
            package = s.split()[1]
        elif s in {"import (", "const (", "var ("}:
            block = s.split()[0]
        elif s.startswith("import "):
            m = _GO_IMPORT.match(s[len("import ") :])
            if m:
                imports[m.group(1) or m.group(2).rsplit("/", 1)[-1]] = m.group(2)
        elif s.startswith("const "):
            m = _GO_SPEC.match(s[len("const ") :])
            if m:
                specs.append((m.group(1), m.group(2) or "", m.group(3)))
    return _GoFile(package, imports, specs)


def _split_plus(expr: str) -> list[str] | None:
    """``A + "x" + b.C`` → terms; None for anything else (calls, arithmetic, iota)."""
    terms, buf, quote = [], "", ""
    for c in expr:
        if quote:
            buf += c
            if c == quote and not buf.endswith("\\" + quote):
                quote = ""
        elif c in '"`':
            quote = c
            buf += c
        elif c == "+":
            terms.append(buf.strip())
            buf = ""
        else:
            buf += c
    terms.append(buf.strip())
    ok = all(_GO_STRING.fullmatch(t) or re.fullmatch(r"[A-Za-z_][\w.]*", t) for t in terms)
    return terms if ok and terms else None


def _literal(term: str) -> str | None:
    m = _GO_STRING.fullmatch(term)
    if not m:
        return None
    if m.group(2) is not None:
        return m.group(2)
    return bytes(m.group(1), "utf-8").decode("unicode_escape")


def go_constants(root: Path, area: str, module: str) -> list[Constant]:
    """Every string constant of the Go packages kept under ``root`` (cross-package refs resolved
    through the files' imports when the imported package was kept too)."""
    files: dict[str, list[tuple[Path, _GoFile]]] = {}
    for path in sorted(root.rglob("*.go")):
        if path.name.endswith("_test.go"):
            continue
        pkg_dir = str(path.parent.relative_to(root))
        files.setdefault(pkg_dir, []).append((path, parse_go(path.read_text(errors="replace"))))
    exprs: dict[tuple[str, str], tuple[str, str, _GoFile, Path]] = {}
    for pkg_dir, parsed in files.items():
        for path, gf in parsed:
            for name, typ, expr in gf.specs:
                exprs[(pkg_dir, name)] = (expr, typ, gf, path)
    values: dict[tuple[str, str], str | None] = {}

    def resolve(key: tuple[str, str], depth: int = 0) -> str | None:
        if key in values:
            return values[key]
        values[key] = None  # cycles and failures resolve to None
        if key not in exprs or depth > 20:
            return None
        expr, _typ, gf, _path = exprs[key]
        terms = _split_plus(expr)
        if terms is None:
            return None
        out = ""
        for t in terms:
            lit = _literal(t)
            if lit is None:
                if "." in t:
                    alias, _, name = t.partition(".")
                    imp = gf.imports.get(alias, "")
                    if not imp.startswith(module + "/"):
                        return None
                    lit = resolve((imp[len(module) + 1 :], name), depth + 1)
                else:
                    lit = resolve((key[0], t), depth + 1)
                if lit is None:
                    return None
            out += lit
        values[key] = out
        return out

    consts = []
    for (pkg_dir, name), (_expr, typ, _gf, path) in sorted(exprs.items()):
        value = resolve((pkg_dir, name))
        if value is not None:
            rel = str(path.relative_to(root))
            consts.append(Constant(area, pkg_dir, name, value, typ, rel))
    return consts


_JAVA_CONST = re.compile(r"static\s+final\s+String\s+(\w+)\s*=\s*([^;]+);")


def java_constants(root: Path, area: str) -> list[Constant]:
    """``static final String`` constants of the Java sources kept under ``root``."""
    exprs: dict[str, tuple[str, Path]] = {}
    for path in sorted(root.rglob("*.java")):
        text = re.sub(r"/\*.*?\*/|//[^\n]*", "", path.read_text(errors="replace"), flags=re.S)
        for m in _JAVA_CONST.finditer(text):
            exprs.setdefault(m.group(1), (" ".join(m.group(2).split()), path))
    values: dict[str, str | None] = {}

    def resolve(name: str, depth: int = 0) -> str | None:
        if name in values:
            return values[name]
        values[name] = None
        if name not in exprs or depth > 20:
            return None
        terms = _split_plus(exprs[name][0].replace("'", '"'))
        if terms is None:
            return None
        out = ""
        for t in terms:
            lit = _literal(t)
            if lit is None:
                lit = resolve(t.rsplit(".", 1)[-1], depth + 1)
            if lit is None:
                return None
            out += lit
        values[name] = out
        return out

    out = []
    for name, (_expr, path) in sorted(exprs.items()):
        value = resolve(name)
        if value is not None:
            rel = str(path.relative_to(root))
            out.append(Constant(area, rel.removesuffix(".java"), name, value, "String", rel))
    return out


def is_key(value: str) -> bool:
    """A Kubernetes annotation/label key: optional DNS prefix + ``/`` + name."""
    prefix, _, name = value.rpartition("/")
    if prefix and not KEY_PREFIX.match(prefix + "/"):
        return False
    return bool(KEY_NAME.match(name)) and len(name) <= 63


def declares_key(c: Constant) -> bool:
    """A constant that names an annotation/label key (not an API group/version or a URL)."""
    if not is_key(c.value):
        return False
    if "/" in c.value:
        return not API_VERSION.match(c.value.rpartition("/")[2])
    return bool(KEYISH_CONST.search(c.name))
