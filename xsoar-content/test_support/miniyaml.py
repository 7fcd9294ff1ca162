"""A small, strict parser for the YAML subset the pack uses (test support only; no PyYAML here).

Supported: block mappings, block sequences (also "key:" followed by "- item" at the same indent),
sequence items that are scalars or mappings ("- key: value" then more keys indented to the key),
empty flow collections "[]" / "{}", full-line comments, and scalars: plain, 'single' (with ''),
"double" (JSON escapes), integers, true/false, null/~.

Everything else raises YamlError rather than being guessed at: tabs, block scalars (| >), anchors and
aliases, tags, non-empty flow collections, multi-line scalars, duplicate keys, inline comments, and
plain scalars a real YAML parser would read differently (containing ": " or " #", starting with an
indicator, or YAML 1.1 booleans such as yes/no/on/off that PyYAML turns into booleans). Keeping the
pack inside this subset means a real parser reads it exactly as this one does.
"""
import json
import re

_KEY_RE = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.\-/ ]*?):(?: (.*))?$")
_INT_RE = re.compile(r"^[-+]?[0-9]+$")
_FLOAT_RE = re.compile(r"^[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$")
_YAML11_BOOLS = {"yes", "no", "on", "off", "y", "n"}
_INDICATORS = tuple("[]{}&*!|>%@`,?")


class YamlError(ValueError):
    pass


def loads(text: str):
    lines = []
    for n, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw[: len(raw) - len(raw.lstrip(" \t"))]:
            raise YamlError(f"line {n}: tab in indentation")
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped == "---" and not lines:
            continue
        lines.append([len(raw) - len(raw.lstrip(" ")), raw.strip(), n])
    if not lines:
        return None
    value, i = _node(lines, 0, lines[0][0])
    if i != len(lines):
        raise YamlError(f"line {lines[i][2]}: unexpected content (bad indentation?)")
    return value


def load_file(path: str):
    with open(path, encoding="utf-8") as f:
        return loads(f.read())


def _is_item(text):
    return text == "-" or text.startswith("- ")


def _node(lines, i, indent):
    if _is_item(lines[i][1]):
        return _seq(lines, i, indent)
    return _map(lines, i, indent)


def _map(lines, i, indent):
    out = {}
    while i < len(lines):
        ind, text, n = lines[i]
        if ind < indent:
            break
        if ind > indent:
            raise YamlError(f"line {n}: unexpected indentation")
        if _is_item(text):
            break
        m = _KEY_RE.match(text)
        if not m:
            raise YamlError(f"line {n}: expected 'key: value', got {text!r}")
        key, rest = m.group(1), m.group(2)
        if key in out:
            raise YamlError(f"line {n}: duplicate key {key!r}")
        i += 1
        if rest is None or rest == "":
            if i < len(lines) and (lines[i][0] > indent or (lines[i][0] == indent and _is_item(lines[i][1]))):
                out[key], i = _node(lines, i, lines[i][0])
            else:
                out[key] = None
        else:
            out[key] = _scalar(rest, n)
    return out, i


def _seq(lines, i, indent):
    out = []
    while i < len(lines):
        ind, text, n = lines[i]
        if ind < indent:
            break
        if ind > indent:
            raise YamlError(f"line {n}: unexpected indentation")
        if not _is_item(text):
            break
        rest = text[1:].lstrip(" ")
        if rest == "":
            i += 1
            if i < len(lines) and lines[i][0] > indent:
                value, i = _node(lines, i, lines[i][0])
            else:
                value = None
            out.append(value)
            continue
        item_indent = ind + (len(text) - len(rest))
        if _KEY_RE.match(rest) and not rest.startswith(("'", '"')):
            lines[i] = [item_indent, rest, n]
            value, i = _map(lines, i, item_indent)
            out.append(value)
        elif _is_item(rest):
            raise YamlError(f"line {n}: nested '- -' sequences are not supported")
        else:
            out.append(_scalar(rest, n))
            i += 1
    return out, i


def _scalar(s, n):
    s = s.strip()
    if s.startswith("'"):
        if len(s) < 2 or not s.endswith("'"):
            raise YamlError(f"line {n}: unterminated single-quoted string")
        inner = s[1:-1]
        if re.search(r"(?<!')'(?!')", inner.replace("''", "")):
            raise YamlError(f"line {n}: stray quote in single-quoted string")
        return inner.replace("''", "'")
    if s.startswith('"'):
        if len(s) < 2 or not s.endswith('"'):
            raise YamlError(f"line {n}: unterminated double-quoted string")
        try:
            return json.loads(s)
        except ValueError as e:
            raise YamlError(f"line {n}: bad double-quoted string: {e}")
    if s == "[]":
        return []
    if s == "{}":
        return {}
    if s.startswith(_INDICATORS) or s.startswith(("- ", "#")) or s == "-":
        raise YamlError(f"line {n}: plain scalar {s!r} starts with an indicator; quote it")
    if ": " in s or s.endswith(":") or " #" in s:
        raise YamlError(f"line {n}: plain scalar {s!r} contains ': ' or ' #'; quote it")
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "~"):
        return None
    if low in _YAML11_BOOLS:
        raise YamlError(f"line {n}: {s!r} is a boolean to YAML 1.1 parsers; quote it")
    if _INT_RE.match(s):
        return int(s)
    if _FLOAT_RE.match(s):
        return float(s)
    return s
