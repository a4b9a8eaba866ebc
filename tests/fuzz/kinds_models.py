"""Fuzz kinds of the model side: train configs, bench suites, adapter and encoder folders,
and the pictures ``chat --image`` reads.

Every kind starts from a real input (the YAML files in ``configs/`` and ``eval/suites/``,
a tiny adapter and a tiny encoder saved in the campaign's setup, a rendered PTB-XL record)
and mutates one thing: YAML/JSON syntax, a field's type or size, a safetensors header or
its tensors, a file's bytes, a folder's layout. A pickle never belongs anywhere: the
mutations that plant one make it create a marker file when unpickled, and the cases fail
when the marker appears.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import pickle
import random
import shutil
import struct
import typing
import zlib
from pathlib import Path
from typing import Any

from tests.fuzz.harness import ROOT, SHARED, Case, Kind

# --------------------------------------------------------------------------- raw values

# YAML snippets (flow style) that replace one value: every type, extremes, tags, aliases.
YAML_VALUES = (
    "null", "~", "true", "no", "0", "-1", "1", "3", "2147483648", "9223372036854775808",
    "-9223372036854775809", "1" + "0" * 30, "9" * 5000, "0.5", "-0.0", "1.0e308",
    "1.0e400", "-1.0e400", ".nan", ".inf", "-.inf", "1e400", "'nan'", "'inf'", "'1e5'", "0x1F",
    "0o17", "1_000", "''", "x", "' '", "'~nosuchuser/x'", "'/'", "'.'", '"\\0"', '"a\\nb"',
    '"\\t\\r"', '"\\ud800"', "'" + "a" * 5000 + "'", "[]", "[1]", "[0]", "[-1]", "[a, b]",
    "[[1]]", "[1, .nan]", "[1.5]", "['1']", "[true]", "[null]", "{}", "{a: 1}",
    "{a: [1, 2]}", "{widths: x}", "2001-12-14", "2001-13-45", "2001-12-14t21:59:43.10-05:00",
    "!!binary aGVsbG8=", "!!binary '%%%'", "!!set {a, b}", "!!omap [{a: 1}]", "!!pairs [{a: 1}]",
    "!!python/object/apply:os.system ['true']", "!!python/name:os.system",
    "!!python/object:argparse.Namespace {a: 1}", "!foo bar", "&x [*x]", "&y {k: *y}",
    "!!float x", "!!int x", "!!int '9999999999999999999999'", "!!bool maybe", "!!null x",
    "!!timestamp x", "!!str 3", "*undefined_alias", "yes", "off", "=", "<<", "{<<: *nope}",
    "[1, 2", "{a: 1", "'unterminated", "@reserved", "`reserved", "%TAG", "? complex",
    "[" * 3 + "]" * 3,
)

# JSON snippets that replace one value.
JSON_VALUES = (
    "null", "true", "false", "0", "-1", "1", "3", "1e400", "-1e400", "NaN", "Infinity",
    "-Infinity", "9" * 5000, "0.5", "-0.0", "1.5e308", '""', '"x"', '"\\u0000"', '"a\\nb"',
    '"\\ud800"', '"' + "a" * 5000 + '"', "[]", "[1]", "[-1]", "[0]", '["a", "b"]', "[[1]]",
    "[1, NaN]", "[1.5]", '["1"]', "[true]", "[null]", "{}", '{"a": 1}', '{"a": [1, 2]}',
    "[1, 2", '{"a": 1', '"unterminated', "undefined", "'single'", "01", "+1", ".5", "1.",
    "0x10", "--1",
)

NAMES = ("x", "", " ", "model", "llm", "encoder", "kwargs", "__class__", "__init__",
         "a.b", "-", "1", "é", "a" * 300)


def _deep(rng: random.Random, flow_open: str = "[", flow_close: str = "]") -> str:
    depth = rng.choice((50, 300, 1000, 5000, 60000))
    return flow_open * depth + flow_close * depth


def _deep_json(rng: random.Random) -> str:
    depth = rng.choice((50, 300, 1000, 5000, 60000))
    if rng.random() < 0.5:
        return "[" * depth + "]" * depth
    return '{"a": ' * depth + "1" + "}" * depth


def _bomb(levels: int = 9, width: int = 10) -> str:
    """A YAML "billion laughs": level k holds ``width`` aliases of level k-1."""
    parts = ["&b0 [" + ", ".join(["lol"] * width) + "]"]
    for k in range(1, levels + 1):
        parts.append(f"&b{k} [" + ", ".join([f"*b{k - 1}"] * width) + "]")
    return "[" + ", ".join(parts) + "]"


def _big_list(rng: random.Random, item: str = "1") -> str:
    return "[" + ", ".join([item] * rng.choice((1000, 20000, 200000))) + "]"


# --------------------------------------------------------------------------- trees


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value of a parsed YAML/JSON tree (mappings and lists), in order."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(prefix + (k,))
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append(prefix + (i,))
            out += _paths(v, prefix + (i,))
    return out


def _parent(tree: Any, path: tuple) -> Any:
    node = tree
    for p in path[:-1]:
        node = node[p]
    return node


def _sections(tree: Any) -> list[tuple]:
    return [()] + [p for p in _paths(tree) if isinstance(_get(tree, p), dict)]


def _get(tree: Any, path: tuple) -> Any:
    node = tree
    for p in path:
        node = node[p]
    return node


def _dump_yaml(tree: Any) -> str:
    import yaml

    return yaml.safe_dump(tree, sort_keys=False, default_flow_style=False, allow_unicode=True,
                          width=1 << 30)


def _fill(text: str, fills: dict[str, str]) -> str:
    for key, snippet in fills.items():
        text = text.replace(key, snippet)
    return text


SLOT = "FUZZSLOT{}"


def _raw_yaml_value(rng: random.Random) -> tuple[str, str]:
    """``(label, snippet)`` of one odd YAML value."""
    r = rng.random()
    if r < 0.07:
        return "deep nesting", _deep(rng, *rng.choice((("[", "]"), ("{a: ", "}"))))
    if r < 0.12:
        return "billion laughs", _bomb()
    if r < 0.16:
        item = rng.choice(("1", "12-lead", "x", "[1]", "single-verify"))
        return f"list of {item}", _big_list(rng, item)
    v = rng.choice(YAML_VALUES)
    return f"value {v[:40]!r}", v


def mutate_yaml(rng: random.Random, text: str) -> tuple[str, bytes, list[str]]:
    """One mutation of a YAML mapping file: ``(label, new bytes, overrides)``."""
    import yaml

    tree = yaml.safe_load(text) or {}
    paths = _paths(tree)
    op = rng.choice(("type", "type", "type", "unknown", "delete", "bomb-alias", "tag",
                     "encoding", "empty", "toplevel", "syntax", "syntax", "overrides",
                     "overrides", "keys", "duplicate"))
    if op == "type" and paths:
        path = rng.choice(paths)
        _parent(tree, path)[path[-1]] = SLOT.format(0)
        label, snippet = _raw_yaml_value(rng)
        return (f"{_dotted(path)} = {label}",
                _fill(_dump_yaml(tree), {SLOT.format(0): snippet}).encode(), [])
    if op == "unknown":
        sec = rng.choice(_sections(tree))
        node = _get(tree, sec)
        key = rng.choice(NAMES + tuple(f"{k}_" for k in list(node)[:3]))
        node[key] = rng.choice((1, "x", None, [1], {"a": 1}))
        return f"unknown key {_dotted(sec + (key,))}", _dump_yaml(tree).encode(), []
    if op == "delete" and paths:
        path = rng.choice(paths)
        del _parent(tree, path)[path[-1]]
        return f"deleted {_dotted(path)}", _dump_yaml(tree).encode(), []
    if op == "bomb-alias" and len(paths) >= 2:
        a, b = sorted(rng.sample(range(len(paths)), 2))
        pa, pb = paths[a], paths[b]
        if pb[:len(pa)] == pa:                   # b inside a: alias a itself
            pb = pa
        _parent(tree, pa)[pa[-1]] = SLOT.format(0)
        if pb != pa:
            _parent(tree, pb)[pb[-1]] = SLOT.format(1)
        text = _fill(_dump_yaml(tree), {SLOT.format(0): _bomb(), SLOT.format(1): "*b9"})
        return f"billion laughs at {_dotted(pa)}, alias at {_dotted(pb)}", text.encode(), []
    if op == "tag" and paths:
        path = rng.choice(paths)
        _parent(tree, path)[path[-1]] = SLOT.format(0)
        tag = rng.choice([v for v in YAML_VALUES if v.startswith("!")])
        body = _fill(_dump_yaml(tree), {SLOT.format(0): tag})
        return f"{_dotted(path)} = {tag}", body.encode(), []
    if op == "encoding":
        return _encoding(rng, text)
    if op == "empty":
        body = rng.choice((b"", b"   \n", b"# only a comment\n", b"---\n", b"~\n", b"...\n",
                           b"\xef\xbb\xbf", b"\x00"))
        return f"empty file {body[:10]!r}", body, []
    if op == "toplevel":
        body = rng.choice(("- a\n- b\n", "3\n", "text\n", "[1, 2]\n", "'x'\n", "null\n",
                           "!!set {a, b}\n", "a: 1\n---\nb: 2\n", "--- 3\n...\n",
                           _dump_yaml([tree]), "&a [*a]\n", "? [a, b]\n: 1\n", "[a]: 1\n",
                           "{1: 2, 3.5: 4, true: 5, null: 6}\n", "2001-12-14: 1\n"))
        return f"top level {body[:30]!r}", body.encode(), []
    if op == "keys":
        sec = rng.choice(_sections(tree))
        key = rng.choice((1, 2.5, True, None, -1))
        _get(tree, sec)[key] = 1
        return f"non-string key {key!r} in {_dotted(sec) or 'top'}", _dump_yaml(tree).encode(), []
    if op == "duplicate" and paths:
        path = rng.choice([p for p in paths if len(p) == 1] or paths)
        body = _dump_yaml(tree) + f"{path[0]}: 1\n"
        return f"duplicate key {path[0]}", body.encode(), []
    if op == "overrides":
        ovr = _overrides(rng, paths)
        return f"overrides {ascii(ovr)[:160]}", text.encode(), ovr
    return _syntax(rng, text)


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _overrides(rng: random.Random, paths: list[tuple]) -> list[str]:
    keys = [_dotted(p) for p in paths if not any(isinstance(x, int) for x in p)]
    out: list[str] = []
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(keys) if keys and rng.random() < 0.7 else rng.choice(
            ("", ".", "a..b", "model.", ".model", "model.llm.source.x", "-", "--", "x" * 500,
             "mödel", "model.llm=3", "data", "meta", "train", "train.steps.x", "1.2"))
        r = rng.random()
        if r < 0.1:
            value = _deep(rng)
        elif r < 0.15:
            value = _bomb()
        else:
            value = rng.choice(YAML_VALUES + ("", "[", "{a", "- a", "a: b", "a=b", "\x00",
                                              "\udc80", "é"))
        form = rng.random()
        if form < 0.6:
            out.append(f"{key}={value}")
        elif form < 0.8:
            out += [f"--{key}", value]
        elif form < 0.9:
            out.append(f"--{key}")             # a flag without its value (maybe last)
        else:
            out.append(rng.choice((key, value, "=", "==", "--=x", "")))
    return out


def _encoding(rng: random.Random, text: str) -> tuple[str, bytes, list[str]]:
    how = rng.choice(("utf-16", "latin-1", "bytes", "bom", "nul", "surrogate"))
    if how == "utf-16":
        return "UTF-16 file", text.encode("utf-16"), []
    if how == "latin-1":
        return "latin-1 é", (text + "\nname_x: \xe9t\xe9\n").encode("latin-1"), []
    if how == "bom":
        return "UTF-8 BOM", b"\xef\xbb\xbf" + text.encode(), []
    data = bytearray(text.encode())
    at = rng.randrange(len(data) + 1)
    junk = {"bytes": bytes(rng.randrange(128, 256) for _ in range(rng.randint(1, 8))),
            "nul": b"\x00", "surrogate": b"\xed\xa0\x80"}[how]
    data[at:at] = junk
    return f"{how} {junk!r} at byte {at}", bytes(data), []


def _syntax(rng: random.Random, text: str) -> tuple[str, bytes, list[str]]:
    how = rng.choice(("insert", "truncate", "indent", "swap", "tabs"))
    lines = text.splitlines(keepends=True)
    if how == "truncate":
        at = rng.randrange(len(text) + 1)
        return f"truncated at char {at}", text[:at].encode(), []
    if how == "indent" and lines:
        i = rng.randrange(len(lines))
        lines[i] = " " * rng.choice((1, 3, 7)) + lines[i]
        return f"line {i + 1} re-indented", "".join(lines).encode(), []
    if how == "swap" and len(lines) > 1:
        i, j = rng.sample(range(len(lines)), 2)
        lines[i], lines[j] = lines[j], lines[i]
        return f"lines {i + 1} and {j + 1} swapped", "".join(lines).encode(), []
    if how == "tabs":
        return "tab indentation", text.replace("  ", "\t").encode(), []
    out = text
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        out = out[:at] + rng.choice(":{}[]&*!|>'\"%@`#,-?\t\n\\") + out[at:]
    return "syntax garbage inserted", out.encode(), []


def mutate_json(rng: random.Random, text: str) -> tuple[str, bytes]:
    """One mutation of a JSON document: ``(label, new bytes)``."""
    tree = json.loads(text)
    paths = _paths(tree)
    op = rng.choice(("type", "type", "type", "unknown", "delete", "deep", "encoding", "empty",
                     "toplevel", "syntax", "nan"))
    if op == "type" and paths:
        path = rng.choice(paths)
        _parent(tree, path)[path[-1]] = SLOT.format(0)
        snippet = rng.choice(JSON_VALUES)
        body = json.dumps(tree, indent=1).replace(json.dumps(SLOT.format(0)), snippet)
        return f"{_dotted(path)} = {snippet[:40]!r}", body.encode()
    if op == "deep" and paths:
        path = rng.choice(paths)
        _parent(tree, path)[path[-1]] = SLOT.format(0)
        body = json.dumps(tree).replace(json.dumps(SLOT.format(0)), _deep_json(rng))
        return f"{_dotted(path)} = deep nesting", body.encode()
    if op == "nan" and paths:
        path = rng.choice(paths)
        _parent(tree, path)[path[-1]] = rng.choice((math.nan, math.inf, -math.inf, 10 ** 400))
        return f"{_dotted(path)} = non-finite or huge", json.dumps(tree).encode()
    if op == "unknown":
        sec = rng.choice(_sections(tree))
        node = _get(tree, sec)
        node[rng.choice(NAMES)] = rng.choice((1, "x", None, [1], {"a": 1}))
        return f"unknown key in {_dotted(sec) or 'top'}", json.dumps(tree).encode()
    if op == "delete" and paths:
        path = rng.choice(paths)
        del _parent(tree, path)[path[-1]]
        return f"deleted {_dotted(path)}", json.dumps(tree).encode()
    if op == "encoding":
        label, body, _ = _encoding(rng, text)
        return label, body
    if op == "empty":
        body = rng.choice((b"", b" ", b"\n", b"\x00", b"\xef\xbb\xbf"))
        return f"empty {body!r}", body
    if op == "toplevel":
        body = rng.choice(("[]", "3", '"x"', "null", "[{}]", json.dumps([tree]), "{} {}",
                           '{"a": 1}'))
        return f"top level {body[:30]!r}", body.encode()
    label, body, _ = _syntax(rng, text)
    return label, body


# --------------------------------------------------------------------------- files


def mutate_bytes(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """Truncate, flip, insert or zero bytes."""
    how = rng.choice(("truncate", "flip", "flip", "insert", "zero", "cut"))
    b = bytearray(data)
    if how == "truncate":
        at = rng.choice((0, 1, 4, 8, 9, rng.randrange(len(b) + 1), max(0, len(b) - 1)))
        return f"truncated to {at} bytes", bytes(b[:at])
    if how == "flip":
        n = rng.choice((1, 1, 3, 20))
        where = [rng.randrange(len(b)) for _ in range(n)] if b else []
        for i in where:
            b[i] ^= 1 << rng.randrange(8)
        return f"{n} bits flipped (first at {where[0] if where else '-'})", bytes(b)
    if how == "insert":
        at = rng.randrange(len(b) + 1)
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        return f"bytes inserted at {at}", bytes(b)
    if how == "zero" and b:
        at = rng.randrange(len(b))
        n = rng.randint(1, 64)
        b[at:at + n] = bytes(len(b[at:at + n]))
        return f"{n} bytes zeroed at {at}", bytes(b)
    at = rng.randrange(len(b) + 1)
    return f"bytes from {at} cut", bytes(b[:at // 2] + b[at:])


class Marker:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def _safetensors_header(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def _safetensors_bytes(header: Any, body: bytes, pad: bool = True) -> bytes:
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def mutate_safetensors(rng: random.Random, path: Path, marker: Path) -> str:
    """Mutate the safetensors file at ``path`` in place (or replace it); returns a label."""
    import torch
    from safetensors.torch import load_file, save_file

    data = path.read_bytes()
    op = rng.choice(("bytes", "bytes", "header", "header", "header", "tensors", "tensors",
                     "pickle", "torch-save", "npz"))
    if op == "bytes":
        label, new = mutate_bytes(rng, data)
        path.write_bytes(new)
        return label
    if op == "pickle":
        path.write_bytes(pickle.dumps({"weight": Marker(str(marker))}))
        return "a plain pickle (with a marker object)"
    if op == "torch-save":
        state = {k: v.clone() for k, v in load_file(str(path)).items()}  # no mmap
        obj = {"state_dict": state, "evil": Marker(str(marker))} if rng.random() < 0.5 else state
        torch.save(obj, path)
        return "a torch.save zip pickle"
    if op == "npz":
        import numpy as np

        buf = io.BytesIO()
        np.savez(buf, a=np.zeros(3))
        path.write_bytes(buf.getvalue())
        return "a numpy npz"
    if op == "header":
        return _mutate_header(rng, path, data)
    state = {k: v.clone() for k, v in load_file(str(path)).items()}  # no mmap
    keys = sorted(state)
    how = rng.choice(("rename", "drop", "extra", "reshape", "dtype", "nan", "empty", "scalar",
                      "huge-values", "none"))
    k = rng.choice(keys) if keys else None
    if how == "rename" and k:
        state[k + "x"] = state.pop(k)
    elif how == "drop" and k:
        del state[k]
    elif how == "extra":
        state[rng.choice(("extra", "module.x", "encoder.y", ""))] = torch.zeros(2)
    elif how == "reshape" and k:
        t = state[k]
        state[k] = rng.choice((t.reshape(-1), t.reshape(1, *t.shape), torch.zeros(3, 5),
                               torch.zeros(*t.shape, 2)))
    elif how == "dtype" and k:
        state[k] = state[k].to(rng.choice((torch.float16, torch.bfloat16, torch.float64,
                                           torch.int64, torch.int8, torch.bool, torch.uint8)))
    elif how == "nan" and k:
        t = state[k].clone()
        if t.is_floating_point() and t.numel():
            t.view(-1)[rng.randrange(t.numel())] = rng.choice((math.nan, math.inf, -math.inf))
        state[k] = t
    elif how == "empty":
        state = {}
    elif how == "scalar" and k:
        state[k] = torch.tensor(1.0)
    elif how == "huge-values" and k:
        state[k] = state[k] * 1e38 if state[k].is_floating_point() else state[k]
    save_file({n: v.contiguous() for n, v in state.items()}, str(path))
    return f"tensors: {how} {k or ''}"


def _mutate_header(rng: random.Random, path: Path, data: bytes) -> str:
    header, body = _safetensors_header(data)
    names = sorted(k for k in header if k != "__metadata__")
    k = rng.choice(names) if names else None
    how = rng.choice(("huge-shape", "offsets-out", "offsets-neg", "offsets-overlap", "dtype",
                      "rank", "drop", "metadata", "not-dict", "length-huge", "length-small",
                      "length-zero", "garbage-json", "non-utf8", "shape-types", "big-header",
                      "duplicate"))
    entry = header.get(k) if k else None
    if how == "huge-shape" and entry:
        entry["shape"] = rng.choice(([10 ** 12], [2 ** 40, 2 ** 40], [2 ** 63], [-1],
                                     [1] * 64))
        end = entry["data_offsets"][0] + rng.choice((8, 2 ** 44))
        entry["data_offsets"][1] = end
    elif how == "offsets-out" and entry:
        entry["data_offsets"] = [0, len(body) + rng.choice((1, 1000, 2 ** 40))]
    elif how == "offsets-neg" and entry:
        entry["data_offsets"] = [-8, 0]
    elif how == "offsets-overlap" and entry and len(names) > 1:
        other = header[names[0] if k != names[0] else names[1]]
        entry["data_offsets"] = list(other["data_offsets"])
    elif how == "dtype" and entry:
        entry["dtype"] = rng.choice(("F64", "I8", "BOOL", "XX", "", 3, None, "F8_E4M3", "U64"))
    elif how == "rank" and entry:
        entry["shape"] = rng.choice(([], [0], entry["shape"] + [1], "3", None, [1.5], ["a"]))
    elif how == "drop" and entry:
        del header[k]
    elif how == "metadata":
        header["__metadata__"] = rng.choice(({"a": 1}, [1], "x", None, {"a": [1]},
                                             {"format_version": "99"}))
    elif how == "not-dict":
        header = rng.choice(([], 3, "x", None))
    elif how == "shape-types" and entry:
        entry["data_offsets"] = rng.choice(("0", [0], [0, 1, 2], [0.5, 8], None))
    elif how == "duplicate" and k:
        text = json.dumps(header)
        dup = text[:-1] + f', "{k}": ' + json.dumps(header[k]) + "}"
        path.write_bytes(_safetensors_bytes(dup.encode(), body))
        return f"header: duplicate {k}"
    elif how == "length-huge":
        path.write_bytes(struct.pack("<Q", rng.choice((2 ** 63, 2 ** 40, 10 ** 8)))
                         + data[8:])
        return "header: declared length huge"
    elif how == "length-small":
        path.write_bytes(struct.pack("<Q", rng.randint(1, 20)) + data[8:])
        return "header: declared length too small"
    elif how == "length-zero":
        path.write_bytes(struct.pack("<Q", 0) + data[8:])
        return "header: declared length 0"
    elif how == "garbage-json":
        path.write_bytes(_safetensors_bytes(b"{not json" + b"}" * rng.randint(0, 3), body))
        return "header: not JSON"
    elif how == "non-utf8":
        path.write_bytes(_safetensors_bytes(b'{"\xff\xfe": 1}', body))
        return "header: not UTF-8"
    elif how == "big-header":
        header["__metadata__"] = {"pad": "x" * rng.choice((10 ** 6, 2 * 10 ** 7))}
    path.write_bytes(_safetensors_bytes(header, body))
    return f"header: {how} {k or ''}"


def mutate_tree(rng: random.Random, root: Path, files: list[str]) -> str:
    """Move, delete, replace by a folder or a symlink one of ``files`` under ``root``."""
    name = rng.choice(files)
    path = root / name
    how = rng.choice(("delete", "dir", "symlink-missing", "symlink-loop", "symlink-dev",
                      "symlink-dir", "empty", "unreadable"))
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    if how == "dir":
        path.mkdir()
        (path / "inner").write_text("x")
    elif how == "symlink-missing":
        path.symlink_to(root / "no-such-file")
    elif how == "symlink-loop":
        path.symlink_to(path)
    elif how == "symlink-dev":
        path.symlink_to(rng.choice(("/dev/zero", "/dev/null", "/dev/urandom")))
    elif how == "symlink-dir":
        path.symlink_to(root)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "unreadable":
        path.write_text("x")
        path.chmod(0)
    return f"{name}: {how}"


# --------------------------------------------------------------------------- checks


def conforms(value: Any, tp: Any) -> bool:
    """Whether ``value`` has the (dataclass field) type ``tp``; floats must be finite."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        return any(conforms(value, a) for a in args)
    if tp is type(None):
        return value is None
    if dataclasses.is_dataclass(tp):
        return isinstance(value, tp) and check_dataclass(value)
    if origin in (list, tuple):
        return isinstance(value, origin) and all(conforms(v, args[0] if args else Any)
                                                 for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if tp is Any:
        return True
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, float) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    return True


def check_dataclass(obj: Any) -> bool:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not conforms(value, hints[f.name]):
            raise AssertionError(f"{type(obj).__name__}.{f.name} = {value!r:.80} is not "
                                 f"{hints[f.name]}")
    return True


def _no_marker(marker: Path):
    assert not marker.exists(), f"a pickle was unpickled ({marker.name} was created)"


# --------------------------------------------------------------------------- train-config

TRAIN_FAMILIES = {
    "meta": ("ecgqa.meta.trainer", "TrainMetaConfig", "validate"),
    "lora": ("ecgqa.image_qa.train", "TrainLoraConfig", "validate"),
    "encoder": ("ecgqa.models.encoders.pretrain", "EncoderPretrainConfig", "validate"),
    "model": ("ecgqa.models.fusion", "ModelConfig", None),
}


def _setup_train(folder: Path) -> None:
    synth = folder / "synth"
    synth.mkdir()
    (synth / "facts.jsonl").write_text("")
    (synth / "records_index.csv").write_text("")


def make_train_config(rng: random.Random, work: Path) -> Case:
    """YAML train configs of configs/{meta,lora,encoder,model}/ mutated, loaded, validated."""
    import importlib

    import yaml

    files = sorted(p for fam in TRAIN_FAMILIES for p in (ROOT / "configs" / fam).glob("*.yaml"))
    src = rng.choice(files)
    family = src.parent.name
    text = src.read_text()
    if family == "encoder":               # validate needs a dataset folder: the setup's stub
        tree = yaml.safe_load(text)
        tree["data"] = str(work / ".setup" / "synth")
        text = _dump_yaml(tree)
    label, body, overrides = mutate_yaml(rng, text)
    path = work / src.name
    path.write_bytes(body)
    module, cls_name, validate_name = TRAIN_FAMILIES[family]

    def run():
        mod = importlib.import_module(module)
        from ecgqa.config import load_config

        cfg = load_config(getattr(mod, cls_name), path, overrides)
        if validate_name:
            getattr(mod, validate_name)(cfg)
        return cfg

    return Case(f"{family}/{src.name} {label}", run, check=check_dataclass)


# --------------------------------------------------------------------------- bench-suite


def make_bench_suite(rng: random.Random, work: Path) -> Case:
    """Bench suite YAMLs of eval/suites/ mutated, loaded, validated and expanded to cells."""
    files = sorted((ROOT / "eval" / "suites").glob("*.yaml"))
    src = rng.choice(files)
    text = src.read_text()
    if rng.random() < 0.12:
        label, body, overrides = _grid(rng, text)
    else:
        label, body, overrides = mutate_yaml(rng, text)
    path = work / src.name
    path.write_bytes(body)

    def run():
        from ecgqa.bench.suite import SuiteConfig, cells, validate
        from ecgqa.config import load_config
        from ecgqa.qa.ecgqa import QUESTION_TYPES

        cfg = load_config(SuiteConfig, path, overrides)
        validate(cfg)
        return cfg, cells(cfg, list(cfg.question_types or QUESTION_TYPES))

    def check(result):
        cfg, grid = result
        check_dataclass(cfg)
        for c in grid:
            assert c.n_way in cfg.n_way and c.k_shot in cfg.k_shot and c.leads in cfg.leads
            assert isinstance(c.n_way, int) and c.n_way >= 1 and c.k_shot >= 1
        assert len(grid) <= 100_000, f"{len(grid)} cells"

    return Case(f"{src.name} {label}", run, check=check)


def _grid(rng: random.Random, text: str) -> tuple[str, bytes, list[str]]:
    """Long grid lists (a grid of millions of cells must be refused, not built)."""
    import yaml

    tree = yaml.safe_load(text)
    n = rng.choice((30, 300, 3000))
    tree["n_way"] = list(range(1, n + 1))
    tree["k_shot"] = list(range(1, n + 1))
    singles = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    pairs = [f"{a},{b}" for i, a in enumerate(singles) for b in singles[i + 1:]]
    tree["leads"] = rng.choice((["12-lead", "limb"] + singles + pairs, ["I," * 20000 + "II"],
                                ["12-lead"], ["12-lead", "12-lead"]))
    tree.pop("leads_at_k", None)
    return f"grid of {n} x {n} x {len(tree['leads'])}", _dump_yaml(tree).encode(), []


# --------------------------------------------------------------------------- adapter

TINY_MODEL = ROOT / "configs" / "model" / "tiny.yaml"
ADAPTER_FILES = ["config.yaml", "meta.yaml", "classes.json", "projector.safetensors",
                 "meta.safetensors", "encoder", "encoder/config.json",
                 "encoder/model.safetensors"]


def _setup_adapter(folder: Path) -> None:
    import torch

    from ecgqa.config import load_config
    from ecgqa.meta.adapter import save_adapter, save_class_split
    from ecgqa.meta.algorithms import build_algorithm
    from ecgqa.meta.loop import MetaConfig
    from ecgqa.models.fusion import EcgQaModel, ModelConfig
    from ecgqa.qa.episodes import ClassSplit

    torch.manual_seed(0)
    model = EcgQaModel.build(load_config(ModelConfig, TINY_MODEL))
    meta = MetaConfig(algorithm="metasgd", inner_steps=2)
    algo = build_algorithm(meta.algorithm, model.projector, meta.inner_lr, meta.first_order)
    out = save_adapter(model, algo, meta, folder / "adapter")
    train = frozenset({(26, ("electrodes problems",), ("no",)), (3, (), ("yes",))})
    split = ClassSplit(meta_train=train, meta_test=frozenset(), test_units=frozenset(
        {"burst noise", "template:32"}), dropped=frozenset(), by="attribute")
    save_class_split(split, {"qa": "out/synth", "question_types": ["single-verify"],
                             "test_fraction": 0.3, "split_seed": 0}, out)
    _setup_lora(folder)


TINY_LORA = ROOT / "configs" / "lora" / "tiny.yaml"
LORA_FILES = ["adapter/config.yaml", "adapter/adapter_config.json",
              "adapter/adapter_model.safetensors", "adapter/vision.safetensors", "config.yaml",
              "instruct/meta.json", "adapter"]


def _setup_lora(folder: Path) -> None:
    """A tiny LoRA image adapter as train-lora leaves it: RUN/adapter, RUN/config.yaml
    (data.path) and the instruction data's meta.json (the render size)."""
    import torch

    from ecgqa.config import load_config
    from ecgqa.image_qa.model import ImageQaModel
    from ecgqa.image_qa.train import TrainLoraConfig

    torch.manual_seed(0)
    run = folder / "lora-run"
    (run / "instruct").mkdir(parents=True)
    (run / "instruct" / "meta.json").write_text(json.dumps({"format": "llava",
                                                            "size": [48, 96]}))
    cfg = load_config(TrainLoraConfig, TINY_LORA, [f"data.path={run / 'instruct'}"])
    ImageQaModel.build(cfg.model).save_pretrained(run / "adapter")
    (run / "config.yaml").write_text(_dump_yaml({"data": {"path": str(run / "instruct")}}))


def make_adapter(rng: random.Random, work: Path) -> Case:
    """Saved tiny adapter folders with one file mutated, loaded by load_adapter & co."""
    import yaml

    if rng.random() < 0.25:
        return _lora_case(rng, work)
    folder = work / "adapter"
    shutil.copytree(work / ".setup" / "adapter", folder, symlinks=True)
    marker = work / "UNPICKLED"
    r = rng.random()
    target = "load_adapter"
    if r < 0.22:
        name = rng.choice(("config.yaml", "config.yaml", "meta.yaml"))
        label, body, overrides = mutate_yaml(rng, (folder / name).read_text())
        while overrides:                       # a saved file takes no overrides
            label, body, overrides = mutate_yaml(rng, (folder / name).read_text())
        (folder / name).write_bytes(body)
        label = f"{name}: {label}"
        if name == "meta.yaml":
            target = rng.choice(("load_adapter", "load_meta_config"))
    elif r < 0.34:
        label, body = mutate_json(rng, (folder / "classes.json").read_text())
        (folder / "classes.json").write_bytes(body)
        label, target = f"classes.json: {label}", "load_class_split"
    elif r < 0.42:
        label = "encoder/config.json: " + _mutate_json_file(rng, folder / "encoder/config.json")
    elif r < 0.47:
        label = "config.yaml: " + _retarget_encoder(rng, folder)
    elif r < 0.82:
        name = rng.choice(("projector.safetensors", "projector.safetensors", "meta.safetensors",
                           "encoder/model.safetensors"))
        label = f"{name}: {mutate_safetensors(rng, folder / name, marker)}"
    else:
        label = mutate_tree(rng, folder, ADAPTER_FILES)
        target = rng.choice(("load_adapter", "load_adapter", "load_meta_config",
                             "load_class_split"))
    overrides = {}
    try:            # never the embedded Gemma nor a model folder: a tiny LLM unless asked
        cfg_file = folder / "config.yaml"
        assert cfg_file.is_file() and cfg_file.stat().st_size < 1 << 20
        source = yaml.safe_load(cfg_file.read_text())["model"]["llm"]["source"]
    except Exception:                                 # noqa: BLE001 - any garbage
        source = None
    if source not in ("tiny-llama", "tiny-gemma"):
        overrides = {"source": "tiny-llama"}

    def run():
        from ecgqa.meta import adapter

        fn = getattr(adapter, target)
        return fn(folder, **overrides) if target == "load_adapter" else fn(folder)

    def check(result):
        _no_marker(marker)
        if target == "load_adapter":
            model, algo, meta = result
            _check_meta(meta)
            import torch

            for p in list(model.projector.parameters()) + list(algo.parameters()):
                assert torch.isfinite(p).all(), "a non-finite weight was loaded"
        elif target == "load_meta_config":
            _check_meta(result)
        elif result is not None:
            assert set(result) >= {"by", "test_units", "meta_train"}, sorted(result)
            assert result["by"] in ("attribute", "template"), result["by"]
            assert all(isinstance(u, str) for u in result["test_units"])
            for t, a, ans in result["meta_train"]:
                assert isinstance(t, int) and not isinstance(t, bool), t
                assert all(isinstance(x, str) for x in a + ans), (a, ans)

    return Case(f"{label} -> {target}", run, check=check, outputs=(marker,))


def _lora_case(rng: random.Random, work: Path) -> Case:
    """A LoRA image adapter run folder with one file mutated, through chat's loaders."""
    import yaml

    run = work / "run"
    shutil.copytree(work / ".setup" / "lora-run", run, symlinks=True)
    cfg_path = run / "config.yaml"
    cfg_path.write_text(_dump_yaml({"data": {"path": str(run / "instruct")}}))
    marker = work / "UNPICKLED"
    name = rng.choice(LORA_FILES[:-1] + ["tree"])
    path = run / name
    if name == "tree":
        label = mutate_tree(rng, run, LORA_FILES)
    elif name.endswith(".safetensors"):
        label = f"{name}: {mutate_safetensors(rng, path, marker)}"
    elif name.endswith(".json"):
        label = f"{name}: {_mutate_json_file(rng, path)}"
    else:
        label, body, overrides = mutate_yaml(rng, path.read_text())
        while overrides:
            label, body, overrides = mutate_yaml(rng, path.read_text())
        path.write_bytes(body)
        label = f"{name}: {label}"
    target = rng.choice(("load", "load", "render_settings"))
    overrides = {}
    try:            # never the embedded Gemma: a tiny LLM unless the config asks for one
        conf = run / "adapter" / "config.yaml"
        assert conf.is_file() and conf.stat().st_size < 1 << 20
        source = yaml.safe_load(conf.read_text())["model"]["llm"]["source"]
    except Exception:                                 # noqa: BLE001 - any garbage
        source = None
    if source not in ("tiny-llama", "tiny-gemma"):
        overrides = {"source": "tiny-llama"}

    def run_it():
        from ecgqa import chat
        from ecgqa.chat import adapters
        from ecgqa.errors import EcgqaError
        from ecgqa.image_qa.loading import load_image_qa

        folder = adapters.image_adapter_folder(run)
        if target == "render_settings":
            return chat.render_settings(folder)
        if overrides:       # what load_image_model does, with a tiny LLM
            try:
                return load_image_qa(folder, **overrides)
            except EcgqaError as err:
                raise chat.ChatError(f"--adapter {folder}: {err}") from None
        return adapters.load_image_model(folder)

    def check(result):
        import torch

        _no_marker(marker)
        if target == "render_settings":
            h, w = result.size
            assert all(type(v) is int and 16 <= v <= 8192 for v in (h, w)), result
        else:
            for p in result.parameters():
                assert torch.isfinite(p).all(), "a non-finite weight was loaded"

    return Case(f"lora {label} -> {target}", run_it, check=check, outputs=(marker,))


def _check_meta(meta) -> None:
    from ecgqa.registry import META_ALGOS

    check_dataclass(meta)
    assert meta.algorithm in META_ALGOS, meta.algorithm
    assert meta.inner_lr > 0 and meta.inner_steps >= 0, meta


def _mutate_json_file(rng: random.Random, path: Path) -> str:
    label, body = mutate_json(rng, path.read_text())
    path.write_bytes(body)
    return label


def _retarget_encoder(rng: random.Random, folder: Path) -> str:
    """The saved model config names another encoder: default, a registry name, a path."""
    import yaml

    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    enc = rng.choice(("default", "resnet1d", "transformer", "/", "..", "encoder/config.json",
                      "no-such-encoder", "cnn"))
    cfg["model"]["encoder"] = enc
    kwargs = rng.choice(({}, {"widths": [8, 8, 16, 16], "blocks": [1, 1, 1, 1], "out_dim": 16},
                         {"widths": [4096] * 4, "blocks": [64] * 4}, {"out_dim": 10 ** 9},
                         {"bogus": 1}, {"d_model": 10 ** 6, "layers": 1}, {"patch": 0}))
    cfg["model"]["encoder_kwargs"] = kwargs
    (folder / "config.yaml").write_text(_dump_yaml(cfg))
    return f"encoder {enc!r} with kwargs {json.dumps(kwargs)[:60]}"


# --------------------------------------------------------------------------- encoder

TINY_ENCODER = {"widths": [8, 8, 16, 16], "blocks": [1, 1, 1, 1], "out_dim": 16}


def _setup_encoder(folder: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from ecgqa.models.encoders import build_encoder, save_encoder

    torch.manual_seed(0)
    enc = build_encoder("resnet1d", **TINY_ENCODER)
    save_encoder(enc, folder / "encoder", {"note": "fuzz"})
    state = {k: v.contiguous() for k, v in enc.state_dict().items()}
    save_file({f"module.{k}": v for k, v in state.items()}, str(folder / "plain.safetensors"))
    torch.save({"state_dict": state}, folder / "plain.pt")


def make_encoder(rng: random.Random, work: Path) -> Case:
    """Saved tiny encoder folders and plain state-dict files, mutated, through load_encoder."""
    marker = work / "UNPICKLED"
    r = rng.random()
    kwargs: dict = {}
    if r < 0.6:
        source = work / "encoder"
        shutil.copytree(work / ".setup" / "encoder", source, symlinks=True)
        q = rng.random()
        if q < 0.35:
            label = "config.json: " + _mutate_json_file(rng, source / "config.json")
        elif q < 0.85:
            label = "model.safetensors: " + mutate_safetensors(rng, source / WEIGHTS, marker)
        else:
            label = mutate_tree(rng, source, ["config.json", WEIGHTS])
    else:
        name = rng.choice(("plain.safetensors", "plain.pt"))
        source = work / name
        shutil.copy(work / ".setup" / name, source)
        kwargs = {"name": "resnet1d", **TINY_ENCODER}
        q = rng.random()
        if q < 0.15:
            kwargs = _odd_kwargs(rng, kwargs)
            label = f"{name} with kwargs {kwargs}"[:160]
        elif name.endswith(".safetensors") and q < 0.8:
            label = f"{name}: {mutate_safetensors(rng, source, marker)}"
        elif q < 0.5:
            label = f"{name}: {_mutate_pt(rng, source, marker)}"
        elif q < 0.8:
            label, body = mutate_bytes(rng, source.read_bytes())
            source.write_bytes(body)
            label = f"{name}: {label}"
        else:
            label = mutate_tree(rng, work, [name])
            if rng.random() < 0.5:
                renamed = source.with_suffix(rng.choice((".bin", ".pth", ".pkl", ".npy", "")))
                if source.exists() or source.is_symlink():
                    source.rename(renamed)
                source, label = renamed, f"{label}, renamed {renamed.name}"

    def run():
        from ecgqa.models.encoders import load_encoder

        return load_encoder(source, **kwargs)

    def check(enc):
        import torch

        _no_marker(marker)
        assert isinstance(enc.out_dim, int) and enc.out_dim >= 1
        for p in enc.state_dict().values():
            if p.is_floating_point():
                assert torch.isfinite(p).all(), "a non-finite weight was loaded"

    return Case(label, run, check=check, outputs=(marker,))


WEIGHTS = "model.safetensors"


def _odd_kwargs(rng: random.Random, kwargs: dict) -> dict:
    out = dict(kwargs)
    key = rng.choice(sorted(out) + ["input_spec", "bogus", "kernel", "pool"])
    out[key] = rng.choice((None, "x", -1, 0, 2, 10 ** 9, 1.5, math.nan, [1], [10 ** 6] * 4,
                           {"a": 1}, {"fs": 1e308, "duration_s": 1e308}, {"leads": ["X"]},
                           {"fs": -1}, [0, 0, 0, 0], True))
    if key == "name":
        out[key] = rng.choice(("transformer", "nope", "", "cnn"))
    return out


def _mutate_pt(rng: random.Random, path: Path, marker: Path) -> str:
    import torch

    state = torch.load(path, weights_only=True)["state_dict"]
    how = rng.choice(("marker", "non-tensor", "nested", "list", "int-keys", "empty",
                      "raw-pickle", "tensor"))
    if how == "marker":
        torch.save({"state_dict": state, "x": Marker(str(marker))}, path)
    elif how == "non-tensor":
        torch.save({"state_dict": {**state, "extra": 3}}, path)
    elif how == "nested":
        torch.save({"model": {"model": state}}, path)
    elif how == "list":
        torch.save(list(state.values()), path)
    elif how == "int-keys":
        torch.save({i: v for i, v in enumerate(state.values())}, path)
    elif how == "empty":
        torch.save({}, path)
    elif how == "raw-pickle":
        path.write_bytes(pickle.dumps(Marker(str(marker))))
    else:
        torch.save(torch.zeros(3), path)
    return f"pickle: {how}"


# --------------------------------------------------------------------------- image


def _setup_image(folder: Path) -> None:
    from ecgqa.image_qa.render import render_image
    from ecgqa.records.read import read_record

    rec = read_record(SHARED / "real" / "ptbxl" / "00001_lr")
    render_image(rec, (256, 512)).save(folder / "ecg.png")


IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "PPM", "TGA", "PCX",
                 "EPS", "PDF", "IM", "SGI", "DDS", "QOI")


def make_image(rng: random.Random, work: Path) -> Case:
    """Pictures for chat --image: formats, modes, sizes, bombs, corrupt bytes, non-files."""
    from PIL import Image

    src = work / ".setup" / "ecg.png"
    base = Image.open(src)
    base.load()
    r = rng.random()
    expect_size = None
    path = work / rng.choice(("ecg.png", "ecg.jpg", "ecg.gif", "ecg.tif", "ecg", "ecg.txt"))
    if r < 0.25:
        label, body = mutate_bytes(rng, _encode(rng, base))
        path.write_bytes(body)
    elif r < 0.45:
        label = _odd_mode(rng, base, path)
    elif r < 0.6:
        label, expect_size = _odd_format(rng, base, path)
    elif r < 0.72:
        label = _bomb_image(rng, path)
    elif r < 0.82:
        label, expect_size = _odd_size(rng, base, path)
    elif r < 0.9:
        label, expect_size = _exif(rng, base, path)
    else:
        path.write_bytes(src.read_bytes())
        label = mutate_tree(rng, work, [path.name])

    def run():
        from ecgqa.chat import read_image

        return read_image(path)

    def check(im):
        assert im.mode == "RGB", im.mode
        assert min(im.size) >= 16 and im.width * im.height <= 10 ** 8, im.size
        if expect_size is not None:
            assert im.size == expect_size, (im.size, expect_size)
        im.getpixel((0, 0))

    return Case(label, run, check=check)


def _encode(rng: random.Random, im, fmt: str | None = None) -> bytes:
    buf = io.BytesIO()
    fmt = fmt or rng.choice(("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"))
    im.save(buf, fmt)
    return buf.getvalue()


def _odd_mode(rng: random.Random, base, path: Path) -> str:
    import numpy as np
    from PIL import Image

    mode = rng.choice(("CMYK", "I;16", "I", "F", "P", "PA", "LA", "L", "1", "RGBA", "YCbCr",
                       "LAB", "HSV", "I;16B", "RGBa"))
    fmt = rng.choice(("PNG", "TIFF", "JPEG", "WEBP", "GIF", "BMP"))
    try:
        if mode == "P" and rng.random() < 0.5:
            im = base.convert("P")
            im.info["transparency"] = 0
        elif mode in ("I;16", "I;16B"):
            arr = (np.asarray(base.convert("L"), dtype=np.uint16) * 257)
            im = Image.fromarray(arr)                    # mode I;16
        elif mode == "RGBA":
            im = base.convert("RGBA")
            im.putalpha(Image.new("L", im.size, rng.choice((0, 128, 255))))
        else:
            im = base.convert(mode)
    except (OSError, ValueError, KeyError, TypeError):
        base.save(path, "PNG")
        return f"mode {mode} not made; plain PNG"
    for f in (fmt, "TIFF", "PNG"):
        try:
            im.save(path, f)
            return f"mode {mode} as {f}"
        except (OSError, ValueError, KeyError, TypeError):
            continue
    base.save(path, "PNG")
    return f"mode {mode} not writable; plain PNG"


def _odd_format(rng: random.Random, base, path: Path) -> tuple[str, tuple | None]:
    from PIL import Image

    fmt = rng.choice(IMAGE_FORMATS + ("animated-GIF", "animated-WEBP", "multipage-TIFF",
                                      "APNG", "MPO"))
    try:
        if fmt.startswith(("animated", "multipage")) or fmt == "APNG":
            frames = [base, base.rotate(180), Image.new("RGB", base.size)]
            real = {"animated-GIF": "GIF", "animated-WEBP": "WEBP", "multipage-TIFF": "TIFF",
                    "APNG": "PNG"}[fmt]
            frames[0].save(path, real, save_all=True, append_images=frames[1:], duration=100)
            return fmt, base.size
        base.save(path, fmt if fmt != "MPO" else "JPEG")
    except (OSError, ValueError, KeyError, RuntimeError):
        path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n")
        return f"{fmt} not writable; a tiny EPS", None
    return fmt, None


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_image(rng: random.Random, path: Path) -> str:
    """A small file that declares (or decompresses to) a huge picture."""
    w, h = rng.choice(((100_000, 100_000), (20_000, 6_000), (65_535, 65_535), (12_000, 9_000),
                       (1, 2 ** 31 - 1), (2 ** 31 - 1, 1), (0, 0)))
    how = rng.choice(("png-header", "png-zeros", "gif-header", "bmp-header"))
    if how == "png-zeros" and w * h <= 200_000_000:
        raw = zlib.compressobj(9)
        rows = bytearray()
        row = b"\x00" + bytes((w + 7) // 8)
        data = b""
        for _ in range(min(h, 20_000)):        # 1-bit grey rows of zeros
            rows += row
            if len(rows) > 1 << 20:
                data += raw.compress(bytes(rows))
                rows.clear()
        data += raw.compress(bytes(rows)) + raw.flush()
        ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    else:
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        data = zlib.compress(b"\x00" * 64)
    if how == "gif-header":
        body = (b"GIF89a" + struct.pack("<HH", min(w, 65535), min(h, 65535)) + b"\x00\x00\x00"
                + b",\x00\x00\x00\x00" + struct.pack("<HH", min(w, 65535), min(h, 65535))
                + b"\x00\x02\x02D\x01\x00;")
    elif how == "bmp-header":
        info = struct.pack("<IiiHHIIiiII", 40, min(w, 2 ** 31 - 1), min(h, 2 ** 31 - 1), 1, 24,
                           0, 0, 2835, 2835, 0, 0)
        body = b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54) + info + bytes(16)
    else:
        body = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data)
                + _png_chunk(b"IEND", b""))
    path.write_bytes(body)
    return f"{how} {w}x{h}"


def _odd_size(rng: random.Random, base, path: Path) -> tuple[str, tuple | None]:
    from PIL import Image

    w, h = rng.choice(((1, 1), (10000, 3), (3, 10000), (16, 16), (15, 400), (4000, 16),
                       (2, 2), (5000, 5000)))
    im = base.resize((w, h)) if w * h < 4_000_000 else Image.new("RGB", (w, h), "white")
    im.save(path, "PNG")
    return f"{w}x{h} px", (w, h) if min(w, h) >= 16 else None


def _exif(rng: random.Random, base, path: Path) -> tuple[str, tuple | None]:
    from PIL import Image

    orientation = rng.choice((1, 3, 6, 8, 5, 0, 9, 65535))
    exif = Image.Exif()
    exif[0x0112] = orientation
    base.save(path, "JPEG", exif=exif.tobytes())
    if rng.random() < 0.3:                 # corrupt the EXIF block itself
        data = bytearray(path.read_bytes())
        at = data.find(b"Exif")
        if at > 0:
            for i in range(at + 8, min(at + 40, len(data))):
                data[i] = rng.randrange(256)
            path.write_bytes(bytes(data))
        return f"JPEG with corrupted EXIF (orientation {orientation})", None
    w, h = base.size
    size = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    return f"JPEG with EXIF orientation {orientation}", size


KINDS = [
    Kind("train-config", make_train_config, 0.8, _setup_train),
    Kind("bench-suite", make_bench_suite, 0.5),
    Kind("adapter", make_adapter, 0.6, _setup_adapter),
    Kind("encoder", make_encoder, 0.5, _setup_encoder),
    Kind("image", make_image, 0.6, _setup_image),
]
