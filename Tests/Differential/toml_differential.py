#!/usr/bin/env python3
"""Differential test of railgate's TOML reader against Python's tomllib (a strict TOML 1.0 parser).

  toml_differential.py generate DIR SEED COUNT   writes DIR/NNNNN.toml: generated and mutated documents
  toml_differential.py compare DIR                compares tomllib with DIR/NNNNN.railgate.json

railgate's test (TOMLDifferentialTests) writes NNNNN.railgate.json: {"ok": false} or
{"ok": true, "value": TAGGED} with TAGGED as in toml-test: tables as objects, arrays as lists,
scalars as {"type": "integer"|"float"|"string"|"bool", "value": "text"}. Documents tomllib reads
into dates, times or integers beyond 64 bits are railgate's deliberate refusals: skipped if refused.
Prints one line per disagreement and a summary; exits 1 if any.
"""
import datetime
import json
import math
import os
import random
import sys
import tomllib

BARE = "abcxyzABC_-019"
INTERESTING = [
    b"\x00", b"\x7f", b"\r", b"\n", b"\t", b"\x1f", b"\x0c", b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80",
    b"\xef\xbb\xbf", b"\"", b"'", b"[", b"]", b"{", b"}", b"=", b"#", b".", b",", b"_", b"e", b"E", b"x", b"X",
    b"o", b"b", b"0", b"1", b"+", b"-", b"\\", b"\\u", b"\\x", b" ", b"inf", b"nan", b"\"\"\"", b"'''",
]


def key(rng):
    kind = rng.random()
    if kind < 0.7:
        return "".join(rng.choice(BARE) for _ in range(rng.randint(1, 6)))
    if kind < 0.85:
        return '"' + string_body(rng) + '"'
    return "'" + "".join(rng.choice("ab c.=#\"é") for _ in range(rng.randint(0, 5))) + "'"


def dotted(rng):
    return ".".join(key(rng) for _ in range(rng.choice([1, 1, 1, 2, 3])))


def string_body(rng):
    parts = []
    for _ in range(rng.randint(0, 6)):
        parts.append(rng.choice(["a", " ", "é", "日本", "\\n", "\\t", "\\\"", "\\\\", "\\u00e9", "\\U0001F600",
                                 "'", "#", "\\b", "\\f", "\\r"]))
    return "".join(parts)


def digits(rng, alphabet, underscores=True):
    text = rng.choice(alphabet[1:]) + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 5)))
    if underscores and len(text) > 1 and rng.random() < 0.3:
        cut = rng.randint(1, len(text) - 1)
        text = text[:cut] + "_" + text[cut:]
    return text


def scalar(rng):
    kind = rng.randint(0, 11)
    if kind == 0:
        return rng.choice(["", "+", "-"]) + rng.choice(["0", digits(rng, "0123456789")])
    if kind == 1:
        return "0x" + digits(rng, "0123456789abcdefABCDEF")
    if kind == 2:
        return "0o" + digits(rng, "01234567")
    if kind == 3:
        return "0b" + digits(rng, "01")
    if kind == 4:
        whole = rng.choice(["0", digits(rng, "0123456789")])
        text = rng.choice(["", "+", "-"]) + whole
        if rng.random() < 0.7:
            text += "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.5 or "." not in text:
            text += rng.choice("eE") + rng.choice(["", "+", "-"]) + digits(rng, "0123456789")
        return text
    if kind == 5:
        return rng.choice(["", "+", "-"]) + rng.choice(["inf", "nan"])
    if kind == 6:
        return rng.choice(["true", "false"])
    if kind == 7:
        return '"' + string_body(rng) + '"'
    if kind == 8:
        return "'" + "".join(rng.choice("ab \\\"é#") for _ in range(rng.randint(0, 6))) + "'"
    if kind == 9:
        body = string_body(rng) + rng.choice(["", "\n", "\\\n   ", "\"\"", "\r\n"]) + string_body(rng)
        return '"""' + rng.choice(["", "\n"]) + body + '"""'
    if kind == 10:
        return "'''" + rng.choice(["", "\n"]) + "ab\\c\n''d" + "'''"
    return str(rng.randint(-2**63, 2**63 - 1))


def value(rng, depth=0):
    kind = rng.random()
    if depth < 3 and kind < 0.12:
        items = [value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
        sep = rng.choice([", ", ",\n  ", " ,"])
        return "[" + sep.join(items) + rng.choice(["", ",", " # c\n"]) + "]"
    if depth < 3 and kind < 0.2:
        keys = {}
        for _ in range(rng.randint(0, 3)):
            keys[dotted(rng)] = value(rng, depth + 1)
        return "{" + ", ".join(f"{k} = {v}" for k, v in keys.items()) + "}"
    return scalar(rng)


def document(rng):
    lines = []
    if rng.random() < 0.05:
        lines.append("\ufeff")
    names = [key(rng) for _ in range(3)]
    for _ in range(rng.randint(1, 12)):
        kind = rng.random()
        if kind < 0.15:
            lines.append("[" + ".".join(rng.choice(names) for _ in range(rng.randint(1, 2))) + "]")
        elif kind < 0.25:
            lines.append("[[" + ".".join(rng.choice(names) for _ in range(rng.randint(1, 2))) + "]]")
        elif kind < 0.3:
            lines.append("# comment " + string_body(rng))
        elif kind < 0.45:
            lines.append(".".join(rng.choice(names) for _ in range(rng.randint(1, 3))) + " = " + value(rng))
        else:
            lines.append(f"{dotted(rng)} = {value(rng)}" + rng.choice(["", " # note"]))
    newline = "\r\n" if rng.random() < 0.1 else "\n"
    text = newline.join(lines) + newline
    return text.replace("\ufeff" + newline, "\ufeff").encode()


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        position = rng.randint(0, len(data))
        if op < 0.5:
            data[position:position] = rng.choice(INTERESTING)
        elif op < 0.8 and data:
            del data[position:position + rng.randint(1, 3)]
        elif data:
            data[min(position, len(data) - 1)] = rng.randint(0, 255)
    return bytes(data)


def tagged(value):
    if isinstance(value, dict):
        return {k: tagged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tagged(v) for v in value]
    if isinstance(value, bool):
        return {"type": "bool", "value": "true" if value else "false"}
    if isinstance(value, int):
        if not -2**63 <= value < 2**63:
            raise OverflowError
        return {"type": "integer", "value": str(value)}
    if isinstance(value, float):
        return {"type": "float", "value": repr(value)}
    if isinstance(value, str):
        return {"type": "string", "value": value}
    if isinstance(value, (datetime.date, datetime.time)):
        raise OverflowError
    raise TypeError(type(value))


def same(ours, theirs):
    if isinstance(theirs, dict) and set(theirs) != {"type", "value"} or isinstance(theirs, dict) and "type" not in theirs:
        return isinstance(ours, dict) and ours.keys() == theirs.keys() and all(same(ours[k], theirs[k]) for k in theirs)
    if isinstance(theirs, list):
        return isinstance(ours, list) and len(ours) == len(theirs) and all(map(same, ours, theirs))
    if isinstance(theirs, dict) and isinstance(theirs.get("type"), str) and isinstance(theirs.get("value"), str) \
            and isinstance(ours, dict) and set(ours) == {"type", "value"}:
        if ours["type"] != theirs["type"]:
            return False
        if theirs["type"] == "float":
            a, b = float(ours["value"]), float(theirs["value"])
            return (math.isnan(a) and math.isnan(b)) or a == b
        return ours["value"] == theirs["value"]
    return False


def main():
    if sys.argv[1] == "generate":
        directory, seed, count = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        rng = random.Random(seed)
        for number in range(count):
            data = document(rng)
            if number % 2 == 1:
                data = mutate(rng, data)
            with open(os.path.join(directory, f"{number:05}.toml"), "wb") as file:
                file.write(data)
        return 0
    directory = sys.argv[2]
    counts = {"documents": 0, "accepted": 0, "refused": 0, "skipped": 0, "disagreements": 0}
    for name in sorted(n for n in os.listdir(directory) if n.endswith(".toml")):
        counts["documents"] += 1
        with open(os.path.join(directory, name), "rb") as file:
            data = file.read()
        with open(os.path.join(directory, name[:-5] + ".railgate.json")) as file:
            ours = json.load(file)
        try:
            # "utf-8-sig": railgate accepts a leading byte-order mark (editors on Windows write one).
            theirs, verdict = tagged(tomllib.loads(data.decode("utf-8-sig"))), True
        except OverflowError:
            counts["skipped"] += 1
            if ours["ok"]:
                print(f"{name}: railgate accepts what it should refuse (date or big integer): {data!r}")
                counts["disagreements"] += 1
            continue
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            theirs, verdict, reason = None, False, str(error)
        counts["accepted" if verdict else "refused"] += 1
        if ours["ok"] != verdict:
            said = ours.get("error", "") if not ours["ok"] else reason
            print(f"{name}: railgate {'accepts' if ours['ok'] else 'refuses'}, tomllib "
                  f"{'accepts' if verdict else 'refuses'} ({said}): {data!r}")
            counts["disagreements"] += 1
        elif verdict and not same(ours["value"], theirs):
            print(f"{name}: different values: railgate {json.dumps(ours['value'])} tomllib {json.dumps(theirs)}: {data!r}")
            counts["disagreements"] += 1
    print(json.dumps(counts))
    return 1 if counts["disagreements"] else 0


if __name__ == "__main__":
    sys.exit(main())
