"""Fuzz kinds for ECG records: mutated real WFDB headers, signal files, Challenge ``.mat``
pairs and multi-segment layouts, through ``read_record`` and ``ecgqa info`` / ``ecgqa plot``.

Every case starts from a real record of ``../shared/data`` (copied; signal files the case
does not change are symlinked) and breaks it in one to three ways.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np

from tests.fuzz.harness import SHARED, Case, Kind, run_cli

REAL = SHARED / "real"
# (header, its signal files): every signal format and quirk the shared data holds
BASES = [
    "cinc2021/E07500.hea", "cinc2021/E07509.hea", "cinc2021/HR06000.hea",
    "cinc2021/JS20001.hea", "cinc2020/E00001.hea", "cinc2020/HR00001.hea",
    "cinc2020/S0001.hea", "cinc2020/A0001.hea", "ptbxl/00001_lr.hea",
    "wfdb-sample/100.hea", "wfdb-sample/s0010_re.hea", "wfdb-sample/a103l.hea",
    "code15/1111.hea", "code15/1111009.hea", "code15/9190_low_sample_rate.hea",
    "cpsc2021/data_101_6.hea",
]

ODD = ["", "0", "-1", "-0", "1e309", "nan", "NaN", "inf", "-inf", "1e-300", "0.0000001",
       "99999999999999999999", "2147483648", "-2147483649", "0x10", "1_000", "++1", "1..2",
       "1/0", "abc", "\u0663\u0660\u0660", "\u202e500", "\U0001d7d8", "\x00", "\t", "#",
       "x" * 300, "../" * 40 + "x", "½", "5e", "(", ")", "/", "+", ":", "1e5", "65536"]
FS = ["500/0", "500(0)/0", "0.0001", "1e6", "100001", "250/3(1)", "360(2)/1", "0.5", "1.6",
      "2", "5", "1e-9", "500.5", "3e2"]
FMT = ["16x0", "16x99999999", "16x3", "16:5", "16:-3", "16+-5", "16+99999999999", "16+7",
       "212", "310", "311", "61", "160", "80", "24", "32", "8", "508", "516", "524", "999",
       "0", "16x2+3", "16+24:1"]
GAIN = ["0/mV", "-200/mV", "nan/mV", "inf/mV", "1e-30/mV", "1e30/mV", "200(-5)/mV", "200/",
        "200/NU", "200/uV", "200/µV", "200/V", "200/nV", "200/°C", "/mV", "200(0", "200//mV",
        "200(99999999999)/mV", "1e-320/mV", "200(0)/mv", "200(0)/MV", "200(0)/mmHg",
        "200/mV/mV", "0(0)/mV"]
LEADS = ["I", "i", "II", "aVR", "AVR", "avr", "V1", "v6", "MLII", "DII", "", "I I", "ECG",
         "Resp", "V7", "\u00e9", "x" * 300]
COMMENTS = ["# Age: -5", "# Age: 99999999999999999999", "# Sex: \x00", "# Dx: ,,,,",
            "# Dx: 426783006," * 200, "# Dx: " + "9" * 400, "#" + "\u202e" * 50,
            "# Age: nan", "# Dx: 164889003,abc,-1", "#" * 5000, "# Sex: Female\r",
            "# Rx: \U0001f600", "# Age: 1e309"]


def _copy_record(rng: random.Random, work: Path, base: str | None = None) -> tuple[Path, str]:
    """Copy a real record into ``work``: the header as a file, its signal files symlinked."""
    base = base or rng.choice(BASES)
    src = REAL / base
    hea = work / src.name
    shutil.copyfile(src, hea)
    for other in src.parent.glob(src.stem + ".*"):
        if other.suffix != ".hea":
            (work / other.name).symlink_to(other.resolve())
    return hea, base


def _signal_files(work: Path, hea: Path) -> list[Path]:
    return sorted(p for p in work.iterdir() if p.stem == hea.stem and p.suffix != ".hea")


def _materialise(path: Path) -> None:
    """Replace a symlink by a copy of its target (before the case changes the file)."""
    if path.is_symlink():
        target = path.resolve()
        path.unlink()
        shutil.copyfile(target, path)


# --------------------------------------------------------------------------- header text


def _lines(text: str) -> list[str]:
    return text.splitlines()


def _mutate_record_line(rng, lines: list[str]) -> str:
    i = next((k for k, line in enumerate(lines) if line.strip() and not line.startswith("#")), 0)
    fields = lines[i].split()
    j = rng.randrange(len(fields) + 1)
    pool = FS if j == 2 and rng.random() < 0.6 else ODD
    value = rng.choice(pool)
    if j == 0 and rng.random() < 0.5:
        value = fields[0] + "/" + rng.choice(["2", "0", "-1", "99999999", "x"])   # segments
    if j < len(fields):
        fields[j] = value
    else:
        fields.append(value)
    lines[i] = " ".join(fields)
    return f"record field {j}={value[:40]!r}"


def _mutate_signal_line(rng, lines: list[str], work: Path) -> str:
    sig = [k for k, line in enumerate(lines) if line.strip() and not line.startswith("#")][1:]
    if not sig:
        return "no signal line"
    i = rng.choice(sig)
    fields = lines[i].split()
    j = rng.randrange(max(1, min(len(fields) + 1, 10)))
    if j == 0:
        value = rng.choice(["x" * 300 + ".dat", "../../../../etc/passwd", "/etc/passwd", "~",
                            ".", "..", "missing.dat", Path(lines[0].split()[0] + ".hea").name,
                            ".setup", "a b.dat", "\x7f.dat", "\u00e9.dat"] + ODD[:8])
    else:
        value = rng.choice([FMT, GAIN, ODD, ODD, ODD, ODD, ODD, ODD, LEADS, LEADS][j])
    if j < len(fields):
        fields[j] = value
    else:
        fields.append(value)
    lines[i] = " ".join(fields)
    if rng.random() < 0.3:                          # the same change on every signal line
        for k in sig:
            f = lines[k].split()
            if j < len(f):
                f[j] = value
                lines[k] = " ".join(f)
    return f"signal field {j}={value[:40]!r}"


def _mutate_structure(rng, lines: list[str]) -> str:
    op = rng.choice(["delete", "duplicate", "swap", "blank", "comment", "truncate-lines",
                     "extra", "tabs", "spaces"])
    if not lines:
        return "empty"
    i = rng.randrange(len(lines))
    if op == "delete":
        del lines[i]
    elif op == "duplicate":
        lines.insert(i, lines[i])
    elif op == "swap":
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "blank":
        lines.insert(i, rng.choice(["", "   ", "\t"]))
    elif op == "comment":
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(COMMENTS))
    elif op == "truncate-lines":
        del lines[max(1, i):]
    elif op == "extra":
        lines.append(rng.choice(lines) + " extra fields 1 2 3")
    elif op == "tabs":
        lines[i] = lines[i].replace(" ", "\t")
    else:
        lines[i] = "  " + lines[i].replace(" ", "   ") + "  "
    return f"structure {op} at line {i}"


def _encode(rng, text: str) -> tuple[bytes, str]:
    op = rng.choice(["utf8", "utf8", "utf8", "crlf", "cr", "bom", "utf16", "latin1", "nul",
                     "cut", "junk", "invalid-utf8", "no-newline"])
    data = text.encode("utf-8", errors="surrogatepass")
    if op == "crlf":
        data = text.replace("\n", "\r\n").encode()
    elif op == "cr":
        data = text.replace("\n", "\r").encode()
    elif op == "bom":
        data = b"\xef\xbb\xbf" + data
    elif op == "utf16":
        data = text.encode("utf-16")
    elif op == "latin1":
        data = text.encode("latin-1", errors="replace") + "# Sex: M\xe4nnlich\n".encode("latin-1")
    elif op == "nul":
        k = rng.randrange(len(data) + 1)
        data = data[:k] + b"\x00" + data[k:]
    elif op == "cut":
        data = data[: rng.randrange(len(data) + 1)]
    elif op == "junk":
        data = data + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    elif op == "invalid-utf8":
        k = rng.randrange(len(data) + 1)
        data = data[:k] + b"\xff\xfe\xc3" + data[k:]
    elif op == "no-newline":
        data = data.rstrip(b"\n")
    return data, op


def _check_record(rec, forced: tuple | None = None) -> None:
    from ecgqa.records.read import MIN_SECONDS, EcgRecord

    assert isinstance(rec, EcgRecord), type(rec)
    sig = rec.signal
    assert sig.dtype == np.float32 and sig.ndim == 2, (sig.dtype, sig.shape)
    assert sig.shape[0] == len(rec.leads) == len(rec.lead_mask) >= 1, sig.shape
    assert len(set(rec.leads)) == len(rec.leads), rec.leads
    assert np.isfinite(sig).all(), "non-finite samples"
    assert np.isfinite(rec.fs) and rec.fs > 0, rec.fs
    assert rec.lead_mask.any(), "no usable lead"
    assert not sig[~rec.lead_mask].any(), "a masked lead holds samples"
    if forced is None:
        assert rec.duration_s >= MIN_SECONDS - 1e-9, rec.duration_s
    else:
        fs, seconds, n_leads = forced
        assert rec.fs == fs and sig.shape == (n_leads, round(fs * seconds)), sig.shape


def _reader_case(rng, hea: Path, label: str) -> Case:
    """``read_record`` as it is, or with the options the training path uses."""
    from ecgqa.records.read import read_record

    spelling = rng.choice([hea, hea.with_suffix(""), hea.with_suffix(".mat"),
                           hea.with_suffix(".dat")]) if rng.random() < 0.2 else hea
    if rng.random() < 0.3:
        fs, seconds = rng.choice([(500.0, 10.0), (250.0, 10.0), (100.0, 5.0)])
        return Case(f"{label} [fs={fs:g}, {seconds:g} s, 12-lead]",
                    lambda: read_record(spelling, fs=fs, duration_s=seconds, leads="12-lead"),
                    check=lambda r: _check_record(r, (fs, seconds, 12)))
    return Case(label, lambda: read_record(spelling), check=_check_record)


def make_header(rng: random.Random, work: Path) -> Case:
    """WFDB/Challenge headers: every field of the record and signal lines, comments,
    structure, encodings and line endings."""
    hea, base = _copy_record(rng, work)
    lines = _lines(hea.read_text(errors="replace"))
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.choice(["record", "signal", "signal", "signal", "structure"])
        if op == "record":
            done.append(_mutate_record_line(rng, lines))
        elif op == "signal":
            done.append(_mutate_signal_line(rng, lines, work))
        else:
            done.append(_mutate_structure(rng, lines))
    data, enc = _encode(rng, "\n".join(lines) + "\n")
    hea.write_bytes(data)
    return _reader_case(rng, hea, f"{base}: {'; '.join(done)}; {enc}")


def make_signal(rng: random.Random, work: Path) -> Case:
    """Signal files (.dat/.mat/FLAC): truncated, corrupted, padded, replaced, or not files."""
    hea, base = _copy_record(rng, work)
    files = _signal_files(work, hea)
    if not files:
        return _reader_case(rng, hea, f"{base}: (no signal file)")
    f = rng.choice(files)
    op = rng.choice(["truncate", "truncate", "flip", "fill", "append", "random", "empty",
                     "directory", "dangling", "loop", "dev-zero", "half-sample"])
    size = f.resolve().stat().st_size
    if op in ("truncate", "half-sample"):
        _materialise(f)
        k = rng.randrange(size + 1) if op == "truncate" else max(0, size - rng.choice([1, 3]))
        with open(f, "r+b") as fh:
            fh.truncate(k)
        op += f" to {k} of {size} bytes"
    elif op in ("flip", "fill"):
        _materialise(f)
        data = bytearray(f.read_bytes())
        if data:
            start = rng.randrange(len(data))
            n = rng.choice([1, 4, 64, len(data)])
            fill = rng.choice([0x00, 0xFF, 0x80, 0x7F])
            for k in range(start, min(len(data), start + n)):
                data[k] = (data[k] ^ (1 << rng.randrange(8))) if op == "flip" else fill
            op += f" {n} bytes at {start}"
        f.write_bytes(bytes(data))
    elif op == "append":
        _materialise(f)
        with open(f, "ab") as fh:
            fh.write(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096))))
    elif op == "random":
        f.unlink()
        f.write_bytes(np.random.default_rng(rng.randrange(2**32)).bytes(size))
    elif op == "empty":
        f.unlink()
        f.write_bytes(b"")
    elif op == "directory":
        f.unlink()
        f.mkdir()
    elif op == "dangling":
        f.unlink()
        f.symlink_to(work / "nowhere")
    elif op == "loop":
        f.unlink()
        f.symlink_to(f)
    else:
        f.unlink()
        f.symlink_to("/dev/zero")
    return _reader_case(rng, hea, f"{base}: {f.name} {op}")


def make_mat(rng: random.Random, work: Path) -> Case:
    """Challenge .hea + .mat pairs: MAT files of other shapes, types, keys and versions, and
    byte offsets that miss them."""
    from scipy.io import savemat

    base = rng.choice([b for b in BASES if b.startswith(("cinc", "wfdb-sample/a103l"))])
    hea, base = _copy_record(rng, work, base)
    mat = hea.with_suffix(".mat")
    lines = _lines(hea.read_text())
    n_sig = int(lines[0].split()[1])
    op = rng.choice(["shape", "dtype", "key", "v5", "offset", "empty", "3d", "header-bytes"])
    if op == "offset":
        value = rng.choice(["16+0", "16+1", "16+23", "16+25", "16+4096", "16x1+99999", "16"])
        for k in range(1, 1 + n_sig):
            f = lines[k].split()
            f[1] = value
            lines[k] = " ".join(f)
        hea.write_text("\n".join(lines) + "\n")
        op += f" {value}"
    elif op == "header-bytes":
        _materialise(mat)
        data = bytearray(mat.read_bytes())
        for _ in range(rng.randrange(1, 5)):
            data[rng.randrange(min(24, len(data)))] = rng.randrange(256)
        mat.write_bytes(bytes(data))
    else:
        gen = np.random.default_rng(rng.randrange(2**32))
        n = rng.choice([0, 1, 10, 5000, 20000])
        shapes = {"shape": (n, n_sig), "dtype": (n_sig, n), "key": (n_sig, n), "v5": (n_sig, n),
                  "empty": (0, 0), "3d": (n_sig, max(1, n // 10), 10)}
        dtype = rng.choice([np.int16, np.int32, np.float64, np.float32, np.uint8, np.complex64,
                            np.int8]) if op == "dtype" else np.int16
        val = (gen.normal(0, 300, shapes[op])).astype(dtype)
        key = rng.choice(["val", "data", "x", "val2"]) if op == "key" else "val"
        mat.unlink()
        savemat(mat, {key: val}, format="5" if op in ("v5", "3d") else "4",
                do_compression=(op == "v5" and rng.random() < 0.5))
        op += f" {val.shape} {val.dtype} key {key}"
    return _reader_case(rng, hea, f"{base}: .mat {op}")


def make_multisegment(rng: random.Random, work: Path) -> Case:
    """Multi-segment WFDB records (layout header + segments + gaps), with their fields
    broken: lengths, missing segments, a segment that is the master itself."""
    import wfdb

    gen = np.random.default_rng(rng.randrange(2**32))
    n_seg = rng.choice([2, 3])
    lengths = [rng.choice([500, 1000, 1500]) for _ in range(n_seg)]
    t = np.arange(sum(lengths)) / 250
    sig = np.stack([np.sin(2 * np.pi * 1.2 * t + k) + 0.05 * gen.normal(size=t.size)
                    for k in range(3)], axis=1)
    names = ["I", "II", "V1"]
    start = 0
    seg_lines = []
    for s, n in enumerate(lengths):
        name = f"m_{s + 1}"
        if s == 1 and rng.random() < 0.3:
            seg_lines.append(f"~ {n}")
        else:
            wfdb.wrsamp(name, fs=250, units=["mV"] * 3, sig_name=names,
                        p_signal=sig[start:start + n], fmt=["16"] * 3, write_dir=str(work))
            seg_lines.append(f"{name} {n}")
        start += n
    (work / "m_layout.hea").write_text("m_layout 3 250 0\n" + "".join(
        f"~ 0 200/mV 16 0 0 0 0 {lead}\n" for lead in names))
    master = [f"m/{n_seg + 1} 3 250 {sum(lengths)}", "m_layout 0", *seg_lines]
    label = []
    op = rng.choice(["none", "length", "count", "missing", "self", "master-field", "layout",
                     "segment-header"])
    if op == "length":
        k = rng.randrange(1, len(master))
        f = master[k].split()
        f[1] = rng.choice(ODD[:12] + ["1", "999999999"])
        master[k] = " ".join(f)
    elif op == "count":
        master[0] = master[0].replace(f"/{n_seg + 1}", "/" + rng.choice(["1", "9", "0", "x"]))
    elif op == "missing":
        victims = [p for p in work.glob("m_*.dat")]
        if victims:
            rng.choice(victims).unlink()
    elif op == "self":
        master[2] = f"m {lengths[0]}"                       # a segment that is the master
    elif op == "master-field":
        _mutate_record_line(rng, master)
    elif op == "layout":
        master[1] = rng.choice(["m_layout 5", "~ 0", "m_1 0", "nolayout 0"])
    elif op == "segment-header":
        seg = work / "m_1.hea"
        if seg.exists():
            seg_text = _lines(seg.read_text())
            _mutate_signal_line(rng, seg_text, work)
            seg.write_text("\n".join(seg_text) + "\n")
    label.append(op)
    hea = work / "m.hea"
    hea.write_text("\n".join(master) + "\n")
    return _reader_case(rng, hea, f"multi-segment ({n_seg} segments): {', '.join(label)}")


def make_cli(rng: random.Random, work: Path) -> Case:
    """``ecgqa info`` (with measurements) and ``ecgqa plot`` on a mutated record: exit 0, or
    exit 2 with one stderr line and no output file."""
    maker = rng.choice([make_header, make_header, make_signal, make_mat])
    inner = maker(rng, work)
    hea = next(work.glob("*.hea"))
    if rng.random() < 0.5:
        out = work / "out" / "ecg.png"
        argv = ["plot", str(hea), "--out", str(out), "--dpi", "30"]
        outputs = (out,)
    else:
        argv = ["info", str(hea), "--json"] + (["--no-measure"] if rng.random() < 0.3 else [])
        outputs = ()
    return Case(f"ecgqa {argv[0]}: {inner.label}", lambda: run_cli(argv), cli=True,
                outputs=outputs)


KINDS = [
    Kind("wfdb-header", make_header, weight=3.0),
    Kind("wfdb-signal", make_signal, weight=1.5),
    Kind("challenge-mat", make_mat, weight=1.0),
    Kind("multi-segment", make_multisegment, weight=0.6),
    Kind("record-cli", make_cli, weight=0.6),
]
