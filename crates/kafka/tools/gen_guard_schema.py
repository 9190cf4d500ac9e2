#!/usr/bin/env python3
"""Generates crates/kafka/src/guard_schema.rs: the field layout of every
request kafka-protocol decodes, read off kafka-protocol's generated decoders.

Run after a kafka-protocol upgrade (the version is taken from Cargo.lock):
    python3 crates/kafka/tools/gen_guard_schema.py
then `cargo test -p keel-kafka guard` (tests/request_guard.rs checks the
table against kafka-protocol's encoders). Fails loudly on a decoder shape it
does not know, rather than guessing.
"""
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
lock = open(os.path.join(ROOT, "Cargo.lock")).read()
VERSION = re.search(r'name = "kafka-protocol"\nversion = "([^"]+)"', lock).group(1)
home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
found = glob.glob(os.path.join(home, "registry/src/*/kafka-protocol-%s/src" % VERSION))
if not found:
    sys.exit("kafka-protocol %s source not found under %s/registry/src (run `cargo fetch --locked`)" % (VERSION, home))
SRC = found[0]
MAX = 32767

PRIMS = {
    "types::Int8": "Ty::Int8", "types::Boolean": "Ty::Int8", "types::Int16": "Ty::Int16", "types::UInt16": "Ty::Int16",
    "types::Int32": "Ty::Int32", "types::UInt32": "Ty::Int32", "types::Int64": "Ty::Int64", "types::Float64": "Ty::Int64",
    "types::Uuid": "Ty::Uuid", "types::String": "Ty::Str", "types::CompactString": "Ty::CompactStr",
    "types::Bytes": "Ty::Bytes", "types::CompactBytes": "Ty::CompactBytes",
}


def cond_range(cond):
    lo, hi = 0, MAX
    for part in cond.split("&&"):
        part = part.strip()
        m = re.fullmatch(r"version >= (\d+)", part)
        if m:
            lo = max(lo, int(m.group(1)))
            continue
        m = re.fullmatch(r"version <= (\d+)", part)
        if m:
            hi = min(hi, int(m.group(1)))
            continue
        m = re.fullmatch(r"version == (\d+)", part)
        if m:
            lo, hi = max(lo, int(m.group(1))), min(hi, int(m.group(1)))
            continue
        raise SystemExit("unknown version condition: %r" % cond)
    return lo, hi


def parse_expr(lines, i):
    line = lines[i].strip()
    m = re.match(r"(types::.*)\.decode\(buf\)\?;?$", line)
    if m:
        return ("T", m.group(1)), i + 1
    m = re.match(r"if (.*) \{$", line)
    if m:
        a, i = parse_expr(lines, i + 1)
        assert lines[i].strip() == "} else {", lines[i]
        b, i = parse_expr(lines, i + 1)
        assert lines[i].strip() in ("}", "};"), lines[i]
        return ("IF", m.group(1), a, b), i + 1
    if line.startswith("bail!("):
        return ("BAIL",), i + 1
    return ("DEFAULT", line), i + 1


def alternatives(expr, lo=0, hi=MAX):
    """(lo, hi, types::X) for every version range in which the field is read."""
    if expr[0] == "T":
        return [(lo, hi, expr[1])]
    if expr[0] in ("DEFAULT", "BAIL"):
        return []
    c_lo, c_hi = cond_range(expr[1])
    out = []
    if max(lo, c_lo) <= min(hi, c_hi):
        out += alternatives(expr[2], max(lo, c_lo), min(hi, c_hi))
    # else branch: the complement of [c_lo, c_hi] within [lo, hi]
    if c_lo > 0 and lo <= min(hi, c_lo - 1):
        out += alternatives(expr[3], lo, min(hi, c_lo - 1))
    if c_hi < MAX and max(lo, c_hi + 1) <= hi:
        out += alternatives(expr[3], max(lo, c_hi + 1), hi)
    return out


def field_types(src):
    """struct name -> field name -> rust type"""
    out = {}
    for m in re.finditer(r"pub struct (\w+) \{\n(.*?)\n\}", src, re.S):
        out[m.group(1)] = dict(re.findall(r"pub (\w+): ([^,\n]+),", m.group(2)))
    return out


def element_struct(rust_type):
    m = re.fullmatch(r"(?:Option<)?(?:Vec<)?(\w+)>*", rust_type.strip())
    if not m:
        raise SystemExit("cannot read the struct type of %r" % rust_type)
    return m.group(1)


def parse_file(path):
    src = open(path).read()
    types = field_types(src)
    structs = {}
    for m in re.finditer(r"impl Decodable for (\w+) \{\n    fn decode<B: ByteBuf>\(buf: &mut B, version: i16\) -> Result<Self> \{\n(.*?)\n        Ok\(Self", src, re.S):
        name, lines = m.group(1), m.group(2).split("\n")
        m2 = re.match(r"\s*if version < (\d+) \|\| version > (\d+) \{", lines[0])
        m2b = re.match(r"\s*if version != (\d+) \{", lines[0])
        if m2:
            vmin, vmax = int(m2.group(1)), int(m2.group(2))
        elif m2b:
            vmin = vmax = int(m2b.group(1))
        else:
            raise SystemExit("%s: no version check in %s: %r" % (path, name, lines[0]))
        i, fields, tags, flexible_from = 3, [], [], None
        while i < len(lines):
            line = lines[i].strip()
            if line.startswith("let mut unknown_tagged_fields"):
                nxt = lines[i + 1].strip()
                m3 = re.fullmatch(r"if version >= (\d+) \{", nxt)
                if m3:
                    flexible_from = int(m3.group(1))
                elif nxt.startswith("let num_tagged_fields"):
                    flexible_from = 0
                elif nxt.startswith("Ok(Self") or nxt == "":
                    flexible_from = None
                else:
                    raise SystemExit("%s %s: unknown tagged field shape %r" % (path, name, nxt))
                for j in range(i, len(lines)):
                    tm = re.fullmatch(r"(\s*)(\d+) => \{", lines[j])
                    if not tm:
                        continue
                    end = next(k for k in range(j + 1, len(lines)) if lines[k] == tm.group(1) + "}")
                    body = [b.strip() for b in lines[j + 1 : end]]
                    if len(body) == 1:
                        cond, stmt = None, body[0]
                    else:
                        assert body[0].startswith("if ") and body[2] == "} else {" and body[3].startswith("bail!"), body
                        cond, stmt = body[0][3:-2], body[1]
                    m4 = re.fullmatch(r"(\w+) = (types::.*)\.decode\(buf\)\?;", stmt)
                    if not m4:
                        raise SystemExit("%s %s: unknown tagged field %r" % (path, name, stmt))
                    lo, hi = cond_range(cond) if cond else (0, MAX)
                    tags.append((int(tm.group(2)), lo, hi, m4.group(2), types[name][m4.group(1)]))
                break
            m5 = re.match(r"let (\w+) = (.*)$", line)
            if m5 and not line.startswith("let mut "):
                fname, rest = m5.group(1), m5.group(2)
                if rest.endswith(".decode(buf)?;"):
                    expr = ("T", rest[: -len(".decode(buf)?;")])
                    i += 1
                elif rest.startswith("if "):
                    lines[i] = rest
                    expr, i = parse_expr(lines, i)
                elif "decode" not in rest and rest.endswith(";"):
                    i += 1  # a field this message never reads: a constant default
                    continue
                else:
                    raise SystemExit("%s %s: unknown statement %r" % (path, name, line))
                for lo, hi, t in alternatives(expr):
                    fields.append((fname, max(lo, vmin), min(hi, vmax), t, types[name][fname]))
                continue
            if line.startswith("let mut ") or line == "":
                i += 1
                continue
            raise SystemExit("%s %s: unknown line %r" % (path, name, line))
        structs[name] = (vmin, vmax, flexible_from, fields, tags)
    return structs


def rust_ty(t, rust_type, module):
    if t in PRIMS:
        return PRIMS[t][4:]
    m = re.fullmatch(r"types::(Compact)?Array\((.*)\)", t)
    if m:
        array = "Ty::CompactArray" if m.group(1) else "Ty::Array"
        return "%s(&%s)" % (array[4:], rust_ty(m.group(2), rust_type, module))
    if t == "types::Struct { version }":
        return "Struct(&%s)" % const_name(module, element_struct(rust_type))
    if t == "types::OptionStruct { version }":
        return "OptionStruct(&%s)" % const_name(module, element_struct(rust_type))
    raise SystemExit("unknown wire type %r" % t)


def const_name(module, struct):
    return (module + "__" + re.sub(r"(?<!^)(?=[A-Z])", "_", struct)).upper()


api_of = dict(re.findall(r"ApiKey::(\w+) => \{?\s*(\w+Request)::header_version\(version\)", open(os.path.join(SRC, "messages.rs")).read()))
out = [
    "//! GENERATED by crates/kafka/tools/gen_guard_schema.py from kafka-protocol %s's" % VERSION,
    "//! decoders: do not edit; rerun the script after a kafka-protocol upgrade.",
    "//! Each request's structures with, per field, the versions that read it",
    "//! and its wire type (see `guard.rs`).",
    "",
    "use kafka_protocol::messages::ApiKey;",
    "",
    "use super::Ty::*;",
    "use super::{f, t, MessageSchema, StructSchema, NEVER};",
    "",
]
messages = []
for path in sorted(glob.glob(os.path.join(SRC, "messages/*_request.rs"))):
    module = os.path.basename(path)[: -len(".rs")]
    structs = parse_file(path)
    for name, (vmin, vmax, flexible_from, fields, tags) in sorted(structs.items()):
        flex = "NEVER" if flexible_from is None else str(flexible_from)
        field_lines = ['        f("%s", %d, %d, %s),' % (fname, lo, hi, rust_ty(t, rt, module)) for fname, lo, hi, t, rt in fields]
        tag_lines = ["        t(%d, %d, %d, %s)," % (tag, lo, hi, rust_ty(t, rt, module)) for tag, lo, hi, t, rt in tags]
        out.append("const %s: StructSchema = StructSchema {" % const_name(module, name))
        out.append('    name: "%s",' % name)
        out.append("    flexible_from: %s," % flex)
        out.append("    fields: &[" + ("\n" + "\n".join(field_lines) + "\n    " if field_lines else "") + "],")
        out.append("    tags: &[" + ("\n" + "\n".join(tag_lines) + "\n    " if tag_lines else "") + "],")
        out.append("};")
    top = [n for n in structs if n.endswith("Request") and n in api_of.values()]
    if len(top) != 1:
        raise SystemExit("%s: top-level request not found (%r)" % (path, top))
    api = [k for k, v in api_of.items() if v == top[0]][0]
    vmin, vmax = structs[top[0]][0], structs[top[0]][1]
    messages.append("    MessageSchema { api_key: ApiKey::%s, min: %d, max: %d, body: &%s }," % (api, vmin, vmax, const_name(module, top[0])))
out.append("")
out.append("/// Every request kafka-protocol decodes.")
out.append("pub(super) const MESSAGES: &[MessageSchema] = &[")
out += messages
out.append("];")
target = os.path.join(ROOT, "crates/kafka/src/guard_schema.rs")
open(target, "w").write("\n".join(out) + "\n")
print("wrote %s: %d requests" % (os.path.relpath(target, ROOT), len(messages)))
