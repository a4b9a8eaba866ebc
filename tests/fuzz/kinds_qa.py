"""Fuzz kinds for the question-answer inputs: ECG-QA dataset folders (JSON shards and their
CSV/TSV side files), single QA files, records indexes, and chat's ``--shots`` examples.

Every case starts from a small slice of the real ECG-QA shards and real records in
``../shared/data`` and mutates one to three things: JSON structure and values, encodings,
CSV columns and fields, index paths, symlinks and file names.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
from pathlib import Path

from tests.fuzz.harness import SHARED, Case, Kind, run_cli

ECGQA = SHARED / "ecgqa" / "ptbxl"
REAL = SHARED / "real"
SHARDS = {"train": "120000.json", "valid": "60000.json", "test": "80000.json"}
SLICE = {"train": 20, "valid": 12, "test": 12}
# real records behind the indexes: ecg_id -> (source file stem under REAL, name in work)
RECORDS = {1: ("ptbxl/00001_lr", "00001_lr"), 6001: ("cinc2021/HR06001", "HR06001"),
           6002: ("cinc2021/HR06002", "HR06002"), 7500: ("cinc2021/E07500", "E07500")}
FIELDS = ("template_id", "question_id", "sample_id", "question_type", "attribute_type",
          "question", "answer", "ecg_id", "attribute")
HUGE_INT = "__HUGE_INT__"           # placeholders replaced in the JSON text
DEEP = "__DEEP__"
BIG_LIST = 100_000

WEIRD_STRINGS = ["", " ", "\x00", "a\x00b", "\U0001F600\U0001F4A5", "\u202eevil\u202c",
                 "\u0645\u0631\u062d\u0628\u0627", "line\nbreak", "\ud800", "\ufeffno",
                 "x" * 70_000, "1", "-1", "1e309", "NaN", "null", "single-verify ",
                 "SINGLE-VERIFY", "no", "yes", "none", "scp_code", "../../etc/passwd"]


# --------------------------------------------------------------------------- values


def weird_value(rng: random.Random, depth: int = 0):
    """A JSON value of an unexpected type or size (placeholders for the text level)."""
    r = rng.random()
    if r < 0.25:
        return rng.choice([None, True, False, 0, -1, 1, 7, 2 ** 63, -(2 ** 63) - 1, 10 ** 30,
                           1.5, 1.0, -0.0, 1e308, float("nan"), float("inf"), float("-inf")])
    if r < 0.5:
        return rng.choice(WEIRD_STRINGS)
    if r < 0.58:
        return rng.choice([HUGE_INT, DEEP])
    if r < 0.65:
        return list(range(BIG_LIST)) if rng.random() < 0.5 else ["no"] * BIG_LIST
    if depth > 2:
        return rng.choice([[], {}])
    if r < 0.85:
        return [weird_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(FIELDS + ("", "x")): weird_value(rng, depth + 1)
            for _ in range(rng.randint(0, 2))}


def mutate_samples(rng: random.Random, samples: list) -> tuple[object, str]:
    """One structural mutation of a list of samples; returns (JSON value, what was done)."""
    samples = json.loads(json.dumps(samples))
    objects = [k for k, s in enumerate(samples) if isinstance(s, dict)]
    i = rng.choice(objects) if objects else 0
    op = rng.randrange(10)
    if not objects or op == 9:
        return rng.choice([{"samples": samples}, samples[:1] and samples[0], None, 3, "x",
                           [], [[s] for s in samples]]), "top-level value"
    s = samples[i]
    key = rng.choice(FIELDS)
    if op <= 3:
        s[key] = weird_value(rng)
        return samples, f"entry {i} {key}={_short(s[key])}"
    if op == 4:
        s.pop(key, None)
        return samples, f"entry {i} without {key}"
    if op == 5:
        s[rng.choice(["extra", "", "\x00", "answer ", key.upper()])] = weird_value(rng)
        return samples, f"entry {i} extra key"
    if op == 6:
        j = rng.choice(objects)
        samples[j] = dict(samples[j], sample_id=s.get("sample_id"))
        return samples, f"entry {j} duplicates sample_id of entry {i}"
    if op == 7:
        samples[i] = weird_value(rng)
        return samples, f"entry {i} replaced by {_short(samples[i])}"
    s[key] = [s.get(key)] if rng.random() < 0.5 else {"value": s.get(key)}
    return samples, f"entry {i} {key} wrapped"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def dump_json(rng: random.Random, value) -> bytes:
    """Serialise with NaN/Infinity tokens allowed and the placeholders expanded."""
    text = json.dumps(value, indent=rng.choice([None, 1]), ensure_ascii=rng.random() < 0.7)
    text = text.replace(json.dumps(HUGE_INT), rng.choice(["9" * 5000, "-" + "9" * 400,
                                                          "1e999999", "0." + "1" * 5000]))
    deep = rng.choice(["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000,
                       "[" * 3000 + "]" * 3000])
    return text.replace(json.dumps(DEEP), deep).encode("utf-8", "surrogatepass")


def mutate_bytes(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """One byte-level mutation of a text file (JSON or CSV)."""
    op = rng.randrange(14)
    n = len(data)
    at = rng.randrange(n + 1)
    if op == 0:
        return data[:at], f"truncated at byte {at}"
    if op == 1:
        return data[:at] + rng.choice([b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\x80"]) + \
            data[at:], f"invalid UTF-8 at byte {at}"
    if op == 2:
        return b"\xef\xbb\xbf" + data, "UTF-8 BOM"
    if op == 3:
        return b"", "empty file"
    if op == 4:
        return data[:at] + b"\x00" * rng.randint(1, 3) + data[at:], f"NUL at byte {at}"
    if op == 5:
        text = data.decode("utf-8", "replace")
        return text.encode(rng.choice(["utf-16", "utf-32", "latin-1", "cp1252"]),
                           "replace"), "other encoding"
    if op == 6:
        return data.replace(b"\n", b"\r\n"), "CRLF"
    if op == 7:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 2000))), "binary garbage"
    if op == 8:
        return data[:at] + b"x" * 200_000 + data[at:], f"200 kB field at byte {at}"
    if op == 9:
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b), "flipped bytes"
    if op == 10:
        return b"[" * 100_000, "deep nesting"
    if op == 11:
        return data[:at] + rng.choice([b'"', b",", b"\t", b"\n", b"'", b"\r"]) + data[at:], \
            f"stray delimiter at byte {at}"
    if op == 12:
        return data + data[at:], "duplicated tail"
    return b" \n\t ", "whitespace only"


def benign_json(rng: random.Random, samples: list) -> tuple[bytes, str]:
    """Changes a reader must accept: extra keys, key order, Unicode text, BOM, CRLF."""
    samples = json.loads(json.dumps(samples))
    s = samples[rng.randrange(len(samples))]
    op = rng.randrange(6)
    if op == 0:
        s[rng.choice(["extra", "", "\x00", "Answer"])] = weird_value(rng)
        what = "extra key"
    elif op == 1:
        samples = [dict(reversed(list(x.items()))) for x in samples]
        what = "keys reversed"
    elif op == 2:
        s["question"] = rng.choice(WEIRD_STRINGS[:8] + WEIRD_STRINGS[9:11])
        what = f"question {_short(s['question'])}"
    elif op == 3 and not s["question_type"].startswith("comparison"):
        s.pop("attribute")
        what = "no attribute"
    else:
        what = ""
    text = json.dumps(samples, indent=rng.choice([None, 0, 2]), ensure_ascii=rng.random() < 0.5)
    data = text.encode("utf-8", "surrogatepass")
    if op == 4:
        data, what = b"\xef\xbb\xbf" + data, "UTF-8 BOM"
    elif op == 5:
        data, what = data.replace(b"\n", b"\r\n") + b"\r\n", "CRLF"
    return data, f"benign: {what or 'reformatted'}"


def mutate_json_file(rng: random.Random, samples: list) -> tuple[bytes, str]:
    """A shard's bytes after one to three mutations (structural and/or byte-level), or
    (a quarter of the time) changes a reader must accept."""
    pristine = isinstance(samples, list) and samples and all(
        isinstance(x, dict) and set(FIELDS) <= set(x) for x in samples)
    if pristine and rng.random() < 0.25:
        return benign_json(rng, samples)
    value, labels = samples, []
    for _ in range(rng.randint(1, 2)):
        value, what = mutate_samples(rng, value) if isinstance(value, list) else (value, "")
        labels.append(what)
    data = dump_json(rng, value)
    if rng.random() < 0.3:
        data, what = mutate_bytes(rng, data)
        labels.append(what)
    return data, "; ".join(x for x in labels if x)


# --------------------------------------------------------------------------- checks


def check_sample(s, known: tuple[str, ...] | None = None) -> None:
    from ecgqa.qa.ecgqa import ATTRIBUTE_TYPES, QUESTION_TYPES, QaSample

    assert isinstance(s, QaSample), type(s)
    for name in ("sample_id", "template_id", "question_id"):
        v = getattr(s, name)
        assert type(v) is int and 0 <= v < 2 ** 63, f"{name} {v!r}"
    texts = [s.question_type, s.attribute_type, s.question, *s.answer, *(s.attribute or ())]
    for t in texts:
        assert type(t) is str, f"{t!r} is not a str"
        t.encode("utf-8")                      # no lone surrogates
    assert s.question_type in QUESTION_TYPES and s.attribute_type in ATTRIBUTE_TYPES
    assert isinstance(s.answer, tuple) and s.answer
    assert isinstance(s.ecg_ids, tuple) and len(s.ecg_ids) == (2 if s.is_comparison else 1)
    assert all(type(i) is int and 0 <= i < 2 ** 63 for i in s.ecg_ids), s.ecg_ids
    assert s.attribute is None or isinstance(s.attribute, tuple)
    if known is not None:
        assert all(a in known for a in s.answer), s.answer


def check_data(data, with_vocab: bool = True) -> None:
    from ecgqa.qa.ecgqa import EcgQaData

    assert isinstance(data, EcgQaData)
    vocab = data.vocab
    assert all(type(a) is str for a in vocab.answers)
    for t, opts in vocab.by_template.items():
        assert type(t) is int and all(type(o) is str for o in opts), (t, opts)
    for split, ids in data.split_ecgs.items():
        assert all(type(i) is int for i in ids), split
    seen = set()
    for s in data.samples:
        check_sample(s, vocab.answers if with_vocab else None)
        assert (s.split, s.sample_id) not in seen, f"sample_id {s.sample_id} twice"
        seen.add((s.split, s.sample_id))


# --------------------------------------------------------------------------- qa-shards


def real_slice() -> dict[str, list]:
    """A few samples of each real shard (every k-th, so all question types show)."""
    out = {}
    for split, name in SHARDS.items():
        data = json.loads((ECGQA / "template" / split / name).read_text())
        step = len(data) // SLICE[split]
        out[split] = data[::step][: SLICE[split]]
    return out


def setup_qa(folder: Path) -> None:
    """A base dataset folder: the real side files and a slice of each real shard."""
    base = folder / "base"
    base.mkdir()
    shutil.copy(ECGQA / "answers.csv", base)
    shutil.copy(ECGQA / "answers_for_each_template.csv", base)
    samples = real_slice()
    used = {i for split in samples.values() for s in split for i in s["ecg_id"]}
    for split in SHARDS:
        lines = (ECGQA / f"{split}_ecgs.tsv").read_text().splitlines()
        keep = lines[:100] + [x for x in lines[100:] if int(x.split("\t")[1]) in used]
        (base / f"{split}_ecgs.tsv").write_text("\n".join(keep) + "\n")
        (base / "template" / split).mkdir(parents=True)
        (base / "template" / split / SHARDS[split]).write_text(json.dumps(samples[split]))


def make_qa_shards(rng: random.Random, work: Path) -> Case:
    """ECG-QA folder (real slice): mutated JSON shards, answers CSVs, split TSVs, layout."""
    from ecgqa.qa.ecgqa import load_ecgqa

    root = work / "ptbxl"
    shutil.copytree(work / ".setup" / "base", root)
    labels = [_mutate_folder(rng, root) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    label = " | ".join(labels)
    if rng.random() < 0.1:
        return Case(f"cli data stats: {label}",
                    lambda: run_cli(["data", "stats", "--qa", str(root), "--json",
                                     "--n-way", "2", "--k-shot", "1", "--q-query", "1"]),
                    cli=True)
    check_answers = rng.random() < 0.85
    return Case(label, lambda: load_ecgqa(root, check_answers=check_answers),
                lambda data: check_data(data, with_vocab=check_answers))


def _mutate_folder(rng: random.Random, root: Path) -> str:
    r = rng.random()
    if r < 0.55:
        split = rng.choice(list(SHARDS))
        shard = root / "template" / split / SHARDS[split]
        if not shard.is_file():
            return "shard already gone"
        try:
            data, what = mutate_json_file(rng, json.loads(shard.read_bytes()))
        except (ValueError, RecursionError):              # mutated already
            data, what = mutate_bytes(rng, shard.read_bytes())
        shard.write_bytes(data)
        return f"{split} shard: {what}"
    if r < 0.7:
        return "answers.csv: " + _mutate_csv(rng, root / "answers.csv", _answers_rows)
    if r < 0.82:
        return "answers_for_each_template.csv: " + _mutate_csv(
            rng, root / "answers_for_each_template.csv", _template_rows)
    if r < 0.92:
        return "tsv: " + _mutate_csv(rng, root / f"{rng.choice(list(SHARDS))}_ecgs.tsv",
                                     _tsv_rows)
    return "layout: " + _mutate_layout(rng, root)


def _answers_rows(rng: random.Random) -> list[str]:
    return [rng.choice(["5", "", "x", "-1", "9" * 5000]) + "," + rng.choice(
        ["", "maybe", "\x00", '"a,b"', "no,yes", "\U0001F600", "x" * 1000])]


def _template_rows(rng: random.Random) -> list[str]:
    tid = rng.choice(["1", "", "x", "-1", "1.5", "9" * 5000, "2"])
    classes = rng.choice(['"[\'no\', \'yes\']"', "1", "'abc'", '"{\'a\': 1}"', '"[1, 2]"',
                          '"' + "[" * 150 + "]" * 150 + '"', '"' + "[" * 1000 + '"',
                          '"__import__(\'os\')"', '"[\'no\'] * 10"', '"(1+2j)"', "",
                          '"[\'' + "x" * 5000 + '\']"', '"None"', '"{\'no\'}"'])
    return [f"{tid},{classes}" if rng.random() < 0.9 else tid]


def _tsv_rows(rng: random.Random) -> list[str]:
    return [rng.choice(["0\t", "\t", "x\ty", "1 2", "0\t" + "9" * 5000, "0\t-5", "0\t1.5",
                        "0\t\x00", "0\t\u0661\u0662", "0\t1\t2", "", "0\tinf"])]


def _mutate_csv(rng: random.Random, path: Path, extra_rows) -> str:
    """One mutation of a CSV/TSV file: rows, columns or bytes."""
    if not path.is_file():
        return f"{path.name} gone"
    lines = path.read_bytes().decode("utf-8", "surrogateescape").splitlines()
    op = rng.randrange(6)
    if op == 0 and lines:
        lines[0] = rng.choice(["", "id,value", "class", "index;class", "CLASS,INDEX",
                               "template_id", "classes,template_id", lines[0] + ",extra"])
        what = f"header {lines[0]!r}"
    elif op == 1 and lines:
        lines = lines[1:]
        what = "no header"
    elif op == 2:
        row = extra_rows(rng)
        at = rng.randint(min(1, len(lines)), len(lines))
        lines[at:at] = row
        what = f"row {row[0][:40]!r}"
    elif op == 3 and len(lines) > 1:
        i = rng.randrange(1, len(lines))
        lines[i] = lines[i].split(",")[0].split("\t")[0]
        what = f"line {i + 1} cut to one field"
    else:
        data, what = mutate_bytes(rng, "\n".join(lines).encode("utf-8", "surrogateescape")
                                  + b"\n")
        path.write_bytes(data)
        return what
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    return what


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _mutate_layout(rng: random.Random, root: Path) -> str:
    op = rng.randrange(8)
    split = rng.choice(list(SHARDS))
    shard = root / "template" / split / SHARDS[split]
    if not (root / "template").is_dir():
        return "template already gone"
    if op == 0:
        _remove(root / "answers.csv")
        return "no answers.csv"
    if op == 1:
        _remove(root / "answers.csv")
        (root / "answers.csv").mkdir()
        return "answers.csv is a folder"
    if op in (2, 3) and not shard.parent.is_dir():
        return "shard folder already gone"
    if op == 2:
        _remove(shard)
        shard.mkdir()
        return f"{split} shard is a folder"
    if op == 3:
        _remove(shard)
        shard.symlink_to(rng.choice(["missing.json", shard.name, "/etc/hostname"]))
        return f"{split} shard is a symlink to {os.readlink(shard)}"
    if op == 4:
        _remove(root / "template")
        (root / "template").write_text("x")
        return "template is a file"
    if op == 5:
        for s in SHARDS:
            _remove(root / "template" / s)
        return "no shards"
    if op == 6:
        name = rng.choice(["a" * 300 + ".json", "\udcff.json", "x\n.json", ".json"])
        try:
            (root / "template" / split / name).write_text("[]")
        except (OSError, UnicodeEncodeError):
            return f"cannot create {name[:20]!r}"
        return f"extra shard {name[:20]!r}"
    p = root / f"{split}_ecgs.tsv"
    _remove(p)
    p.symlink_to(p.name)
    return f"{split}_ecgs.tsv is a symlink loop"


# --------------------------------------------------------------------------- qa-file


def setup_qa_file(folder: Path) -> None:
    samples = real_slice()
    (folder / "samples.json").write_text(json.dumps(samples["train"] + samples["test"]))


def make_qa_file(rng: random.Random, work: Path) -> Case:
    """One QA JSON file (load_qa_file): mutated structure, values, encodings, paths."""
    from ecgqa.qa.ecgqa import load_qa_file

    samples = json.loads((work / ".setup" / "samples.json").read_text())
    path = work / "qa.json"
    data, label = mutate_json_file(rng, samples)
    path.write_bytes(data)
    r = rng.random()
    if r < 0.04:
        path = work / ("q" * 300 + ".json")
        label = "300-character file name"
    elif r < 0.07:
        path = Path("~no_such_user_ecgqa/qa.json")
        label = "~unknown user"
    elif r < 0.1:
        path = work
        label = "a folder"
    qtypes = rng.choice([None, None, None, ["single-verify"], ["nonsense"]])
    return Case(label, lambda: load_qa_file(path, question_types=qtypes),
                lambda data: check_data(data, with_vocab=True))


# --------------------------------------------------------------------------- records index


def setup_records(folder: Path) -> None:
    """Copies of a few real records, and a shots base (samples about those records)."""
    rec = folder / "records"
    rec.mkdir()
    for src, name in RECORDS.values():
        for f in (REAL / src).parent.glob((REAL / src).name + ".*"):
            shutil.copy(f, rec / (name + f.suffix))
    setup_qa_file(folder)


def link_records(work: Path) -> Path:
    """``work/records/`` with a symlink to each setup record file (so mutations stay here)."""
    rec = work / "records"
    rec.mkdir()
    for f in sorted((work / ".setup" / "records").iterdir()):
        (rec / f.name).symlink_to(Path("..") / ".setup" / "records" / f.name)
    return rec


def index_rows(rng: random.Random, work: Path) -> list[list[str]]:
    """Good ``ecg_id,path`` rows for the linked records, in some spelling."""
    rows = []
    for ecg_id, (_, name) in RECORDS.items():
        path = rng.choice([f"records/{name}", f"records/{name}.hea", f"./records/{name}",
                           f"records/../records/{name}", str(work / "records" / name),
                           f" records/{name} "])
        rows.append([str(ecg_id), path])
    return rows


BAD_PATHS = ["../../etc/passwd", "/etc/passwd", "..", ".", "x/..", "../records/HR06001", "records/",
             "records/missing", "", " ", "~/x", "~no_such_user_ecgqa/x", "a\x00b",
             "records/" + "n" * 300, "records/" + "d/" * 3000 + "x", "records/\u202e\U0001F600",
             "records/x\ny", "records/E07500.mat", "records/E07500.HEA", "records/E07500.dat",
             "records/loop", "records/dangling", "records/outside", "records/folder", "*", "[",
             "records/E075*", "records/a**b", "C:\\records\\E07500", "file:///etc/passwd"]
BAD_IDS = ["x", "", " 1 ", "1.0", "1e3", "-5", "9" * 5000, "0x10", "\u0661", "1_000", "+2",
           "6001", "nan", "\x00"]


def write_csv(rng: random.Random, path: Path, header: list[str], rows: list[list[str]]) -> str:
    """Write rows as CSV, with one mutation of header, rows or bytes; returns the label."""
    op = rng.randrange(8)
    what = ""
    if op == 0:
        rows[rng.randrange(len(rows))][1] = p = rng.choice(BAD_PATHS)
        what = f"path {p[:30]!r}"
    elif op == 1:
        rows[rng.randrange(len(rows))][0] = i = rng.choice(BAD_IDS)
        what = f"id {i[:30]!r}"
    elif op == 2:
        header = rng.choice([[], ["ecg_id"], ["path", "ecg_id"], ["ECG_ID", "PATH"],
                             header + ["extra"], ["\ufeffecg_id", "path"], [" ecg_id", "path "]])
        what = f"header {header}"
    elif op == 3:
        row = rng.choice([[], ["1"], ["1", "records/E07500", "x"], ["", ""], ["#", "comment"]])
        rows.insert(rng.randint(0, len(rows)), row)
        what = f"row {row}"
    elif op == 4:
        rows = rows + [list(rows[rng.randrange(len(rows))])]
        what = "duplicate row"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=rng.choice(["\n", "\r\n"]))
    for r in ([header] if header else []) + rows:
        w.writerow(r)
    data = buf.getvalue().encode("utf-8", "surrogatepass")
    if op >= 5:
        data, what = mutate_bytes(rng, data)
    path.write_bytes(data)
    return what


def write_csv_plain(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["ecg_id", "path"], *rows])


def add_links(rng: random.Random, rec: Path) -> None:
    """Awkward entries in ``records/``: a loop, a dangling link, a link leaving the tree."""
    (rec / "loop.hea").symlink_to("loop2.hea")
    (rec / "loop2.hea").symlink_to("loop.hea")
    (rec / "dangling.hea").symlink_to("nowhere.hea")
    (rec / "outside.hea").symlink_to("/etc/hostname")
    (rec / "folder.hea").mkdir()
    if rng.random() < 0.5:
        (rec / "a**b.hea").symlink_to("E07500.hea")
        (rec / "a**b.mat").symlink_to("E07500.mat")


def make_records_index(rng: random.Random, work: Path) -> Case:
    """Records index / MIMIC record_list.csv over real records: paths, ids, bytes, links.

    Then path/require/available of some ids, and for a fraction SignalCache reads (with a
    damaged .npz entry for some)."""
    rec = link_records(work)
    add_links(rng, rec)
    rows = index_rows(rng, work)
    r = rng.random()
    if r < 0.15:
        target = work / "mimic"
        target.mkdir()
        (target / "files").symlink_to(Path("..") / "records")
        rows = [[r[0], r[1].replace("records/", "files/")] for r in rows]
        label = "mimic: " + write_csv(rng, target / "record_list.csv", ["study_id", "path"],
                                      rows)
        absolute = set()
    else:
        csv_path = work / "records_index.csv"
        label = write_csv(rng, csv_path, ["ecg_id", "path"], rows)
        target = work if r < 0.25 else csv_path
        absolute = {int(x[0]) for x in rows if len(x) > 1 and x[0].isdigit() and len(x[0]) < 19
                    and x[1].startswith("/")}
    if rng.random() < 0.1:
        return Case(f"cli data stats: {label}", lambda: run_cli(
            ["data", "stats", "--qa", str(ECGQA), "--records", str(target), "--json"]),
            cli=True)
    ids = [1, 6001, 6002, 7500] + [rng.choice([0, -1, 10 ** 20, 2 ** 63])]
    read = rng.random()
    cache = work / "cache"
    return Case(label, lambda: _resolve(target, ids, read, cache),
                lambda out: _check_resolved(out, work, absolute))


def _resolve(target: Path, ids: list[int], read: float, cache: Path):
    from ecgqa.qa.cache import SignalCache
    from ecgqa.qa.resolve import make_resolver

    resolver = make_resolver(target)
    found = {i: resolver.path(i) for i in ids}
    have = resolver.available(ids)
    assert have == {i for i, p in found.items() if p is not None}, (have, found)
    for i in sorted(have):
        assert resolver.require(i) == found[i]
    signals = {}
    if have and read < 0.35:
        sc = SignalCache(resolver, cache_dir=cache if read < 0.2 else None)
        first = min(have)
        signals[first] = sc.get(first)
        if read < 0.1:                        # a damaged cache entry is read again
            for f in sorted(cache.rglob("*.npz")):
                data = f.read_bytes()
                f.write_bytes(data[: len(data) // 2] if read < 0.05 else data[:200] + b"\0"
                              * 64 + data[264:])
            signals[first] = SignalCache(resolver, cache_dir=cache).get(first)
    return found, signals


def _check_resolved(out, work: Path, absolute: set[int]) -> None:
    import numpy as np

    found, signals = out
    inside = os.path.normpath(work)
    for i, p in found.items():
        if p is None:
            continue
        assert Path(str(p) + ".hea").is_file(), f"{i} -> {p} has no header"
        assert i in absolute or os.path.normpath(p).startswith(inside + os.sep), \
            f"ecg_id {i} resolved outside the index folder: {p}"
    for i, (sig, mask) in signals.items():
        assert sig.shape == (12, 5000) and sig.dtype == np.float32, (i, sig.shape, sig.dtype)
        assert mask.shape == (12,) and mask.dtype == bool, (i, mask.shape)
        assert np.isfinite(sig).all(), i


# --------------------------------------------------------------------------- shots


def shot_samples(rng: random.Random, work: Path) -> list:
    """Real samples re-pointed at the linked records (single and comparison questions)."""
    samples = json.loads((work / ".setup" / "samples.json").read_text())
    ids = list(RECORDS)
    for s in samples:
        s["ecg_id"] = rng.sample(ids, len(s["ecg_id"]))
    return samples[: rng.randint(1, len(samples))]


def make_shots(rng: random.Random, work: Path) -> Case:
    """chat --shots: a mutated JSON shard or dataset folder and a mutated records index."""
    from ecgqa.chat import DEFAULT_MAX_SHOTS, load_shots

    # load_shots only: `ecgqa chat --shots` loads the LLM as soon as the shots load

    rec = link_records(work)
    add_links(rng, rec)
    samples = shot_samples(rng, work)
    shots = work / "shots.json"
    label = ""
    if rng.random() < 0.25:                                 # an ECG-QA-schema folder
        shots = work / "shotsdir"
        (shots / "template" / "train").mkdir(parents=True)
        shutil.copy(ECGQA / "answers.csv", shots)
        target = shots / "template" / "train" / "0.json"
        label = "folder; "
    else:
        target = shots
    if rng.random() < 0.6:
        data, what = mutate_json_file(rng, samples)
        label += what
    else:
        data = json.dumps(samples).encode()
    target.write_bytes(data)
    records, where = None, rng.random()
    if where < 0.8:                   # found beside (or above) the shots, or given
        index = work / "records_index.csv"
        if rng.random() < 0.5:
            label += "; index " + write_csv(rng, index, ["ecg_id", "path"], index_rows(rng, work))
        else:
            write_csv_plain(index, index_rows(rng, work))
        records = None if where < 0.55 else rng.choice([index, work])
    else:
        records = rng.choice([None, work / "nope.csv", work / ("r" * 300 + ".csv"),
                              "~no_such_user_ecgqa/i.csv", work / "records"])
        label += f"; records {str(records)[-30:]!r}"
    path = rng.choice([shots] * 12 + [work / "missing.json", work / ("s" * 300 + ".json"),
                                      "~no_such_user_ecgqa/s.json", rec])
    limit = rng.choice([DEFAULT_MAX_SHOTS] * 6 + [1, 3, 0, -1])
    return Case(f"{label}; shots {str(path)[-30:]!r} limit {limit}",
                lambda: load_shots(path, records, limit),
                lambda out: _check_shots(out, limit))


def _check_shots(out, limit: int) -> None:
    samples, resolver = out
    assert 1 <= len(samples) <= max(limit, 1), len(samples)
    for s in samples:
        check_sample(s)
        for i in s.ecg_ids:
            p = resolver.path(i)
            assert p is not None and Path(str(p) + ".hea").is_file(), (i, p)


KINDS = [
    Kind("qa-shards", make_qa_shards, 1.0, setup_qa),
    Kind("qa-file", make_qa_file, 0.5, setup_qa_file),
    Kind("records-index", make_records_index, 0.8, setup_records),
    Kind("shots", make_shots, 0.5, setup_records),
]
