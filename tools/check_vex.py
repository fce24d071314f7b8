#!/usr/bin/env python3
"""Checks the two instances of the ymm `vpdpbusd` kernel (kernels/src/x86_64/avxvnni).

For every entry point `avxvnni::vex_<tile>_<a>` and its twin `avxvnni::evex_<tile>_<a>`:
  1. the VEX instance (the tile function it jumps to, with everything inlined into it)
     holds `{vex} vpdpbusd` and no EVEX-only instruction: no zmm, no ymm16-31/xmm16-31,
     no mask register, no EVEX-only mnemonic;
  2. the EVEX instance's `vpdpbusd` are all EVEX (no `{vex}` prefix);
  3. the hot K loop of the full tile (the loop with the most `vpdpbusd`) is the same
     instruction sequence in both, once the `{vex}` prefix and register numbers are
     ignored (LLVM may allocate registers differently, e.g. ymm16+ in the twin).

Usage: cargo build --release && python3 tools/check_vex.py [binary]
(default binary: target/release/qkern). Exits 1 on any failure.
"""
import re
import subprocess
import sys

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/qkern"
dis = subprocess.run(
    ["objdump", "-d", "--no-show-raw-insn", "-M", "intel", "-C", binary],
    check=True, capture_output=True, text=True,
).stdout

# function name -> list of (address, instruction text)
funcs = {}
by_addr = {}
cur = None
for line in dis.splitlines():
    m = re.match(r"^([0-9a-f]+) <(.*)>:$", line)
    if m:
        cur = []
        addr = int(m.group(1), 16)
        funcs.setdefault(m.group(2), []).append((addr, cur))
        by_addr[addr] = cur
        continue
    m = re.match(r"^\s+([0-9a-f]+):\s+(.*)$", line)
    if m and cur is not None:
        cur.append((int(m.group(1), 16), m.group(2).strip()))

EVEX_ONLY = re.compile(r"\bzmm\d+|\b[xy]mm(1[6-9]|2\d|3[01])\b|\bk[0-7]\b|\{k[0-7]\}|\{z\}|\{1to\d+\}|vpternlog|vpmov[a-z]*(db|dw|qb|qd|qw)\b|vpcmp[a-z]*\s+k|vpermt2|vpermi2|vprold|vprord|vpsravq|vpmaxsq|vpminsq|vpmullq|vcvt[a-z]*2(u)?qq|vpxord|vpxorq|vpandd|vpandq|vpord|vporq|vmovdqu(8|16|32|64)|vmovdqa(32|64)|vpbroadcastm|vpabsq|\bkmov|\bkor|\bkand")


def tile_of(entry):
    body = funcs[entry][0][1]
    m = re.match(r"jmp\s+([0-9a-f]+) <", body[0][1])
    if not m:
        return body  # not a tail call: the entry point itself holds the tile
    return by_addr[int(m.group(1), 16)]


def k_loops(body):
    """The innermost loops (a conditional backward jump over straight-line code) that
    hold a vpdpbusd, in address order, each as its instruction list."""
    loops = []
    addrs = [a for a, _ in body]
    for i, (a, ins) in enumerate(body):
        m = re.match(r"j(?!mp)\w+\s+([0-9a-f]+) <", ins)
        if not m:
            continue
        target = int(m.group(1), 16)
        if target > a or target not in addrs:
            continue
        j = addrs.index(target)
        loop = [x for _, x in body[j:i + 1]]
        if any(x.startswith("j") or x.startswith("call") for x in loop[:-1]):
            continue
        if any("vpdpbusd" in x for x in loop):
            loops.append(loop)
    return loops


def shape(ins):
    """An instruction without encoding prefix, register numbers, addresses or labels."""
    ins = ins.replace("{vex} ", "")
    ins = re.sub(r"\b([xyz]mm)\d+", r"\1", ins)
    ins = re.sub(r"\b(r\d+[dwb]?|[re]?[abcd]x|[re]?[sd]i|[re]?[sb]p|[abcd]l)\b", "gpr", ins)
    # Branch targets first: an address of decimal digits only (e.g. 210580) would
    # otherwise become "N" below and no longer be recognised as one.
    ins = re.sub(r"^(j\w+|call)\s+[0-9a-f]+\s*", r"\1 ", ins)
    ins = re.sub(r"<[^>]*>", "", ins)
    ins = re.sub(r"0x[0-9a-f]+|\b\d+\b", "N", ins)
    return ins.strip()


fail = False
entries = sorted(n for n in funcs if re.fullmatch(r"qkern_kernels::x86_64::avxvnni::vex_\w+", n))
if not entries:
    sys.exit(f"no avxvnni::vex_* entry points in {binary}")
for vex_entry in entries:
    evex_entry = vex_entry.replace("::vex_", "::evex_")
    short = vex_entry.rsplit("::", 1)[1][4:]
    vex_full, evex_full = tile_of(vex_entry), tile_of(evex_entry)
    vex_body = [x for _, x in vex_full]
    evex_body = [x for _, x in evex_full]
    n_vex = sum(x.startswith("{vex} vpdpbusd") for x in vex_body)
    bad = [x for x in vex_body if EVEX_ONLY.search(x) or (x.startswith("vpdpbusd"))]
    n_evex = sum(x.startswith("vpdpbusd") for x in evex_body)
    evex_vex = sum("{vex}" in x for x in evex_body)
    lv_all, le_all = k_loops(vex_full), k_loops(evex_full)
    # The hot loop: the full tile's (most vpdpbusd).
    lv = max(lv_all, key=lambda l: sum("vpdpbusd" in x for x in l))
    le = max(le_all, key=lambda l: sum("vpdpbusd" in x for x in l))
    same = [shape(x) for x in lv] == [shape(x) for x in le]
    same_all = len(lv_all) == len(le_all) and all(
        [shape(x) for x in a] == [shape(x) for x in b] for a, b in zip(lv_all, le_all))
    spills = sum(sum("rsp" in x for x in l) for l in lv_all)
    print(f"{short}: VEX instance {len(vex_body)} instructions, {n_vex} '{{vex}} vpdpbusd', "
          f"{len(bad)} EVEX-only; EVEX twin {n_evex} EVEX vpdpbusd, {evex_vex} VEX")
    print(f"    K loops: {len(lv_all)} in the VEX instance, {len(le_all)} in the twin; "
          f"{spills} stack accesses inside the VEX loops; hot loop {len(lv)} instructions, "
          f"{sum('vpdpbusd' in x for x in lv)} vpdpbusd, same sequence in both: {same}; "
          f"every K loop the same: {same_all}")
    for x in bad[:10]:
        print(f"    EVEX-only in the VEX instance: {x}")
    if not same or "-v" in sys.argv:
        for a, b in zip(lv, le):
            mark = " " if shape(a) == shape(b) else "!"
            print(f"   {mark} {a:<50} | {b}")
    if n_vex == 0 or bad or n_evex == 0 or evex_vex or not same:
        fail = True
# Every function of the VEX instance (the epilogues and helpers the tiles call too).
vex_fns = [n for n in funcs if "avxvnni::gemm::vex::" in n]
vex_all = [x for n in vex_fns for _, body in funcs[n] for _, x in body]
bad_all = [x for x in vex_all if EVEX_ONLY.search(x) or x.startswith("vpdpbusd")]
print(f"VEX instance, all {sum(len(funcs[n]) for n in vex_fns)} functions: {len(vex_all)} instructions, "
      f"{sum(x.startswith('{vex} vpdpbusd') for x in vex_all)} '{{vex}} vpdpbusd', {len(bad_all)} EVEX-only")
for x in bad_all[:10]:
    print(f"    EVEX-only: {x}")
if bad_all:
    fail = True
# The detector itself must see EVEX where there is some: the twin (compiled with AVX-512)
# always has its EVEX vpdpbusd, and usually other EVEX forms too.
evex_all = [x for n in funcs if "avxvnni::gemm::evex::" in n for _, body in funcs[n] for _, x in body]
evex_seen = sum(bool(EVEX_ONLY.search(x)) or x.startswith("vpdpbusd") for x in evex_all)
print(f"EVEX twin, all functions: {len(evex_all)} instructions, {evex_seen} EVEX-encoded ones detected "
      f"(e.g. {next((x for x in evex_all if EVEX_ONLY.search(x)), '-')})")
if evex_seen == 0:
    fail = True
print("FAIL" if fail else "OK")
sys.exit(1 if fail else 0)
