#!/usr/bin/env bash
# Static throughput of the AArch64 microkernels' inner loops (GEMM K loops, the depthwise
# tap-pair loops, the codebook K loops), by llvm-mca
# (issue 7 point 7: qemu says nothing about speed).
#
#   benches/arm-mca.sh [CPU ...]      default CPUs: neoverse-n1 cortex-a76 neoverse-v1
#                                     (cortex-a53: the NEON-only loops)
#
# 1. Cross-compiles qkern-kernels for aarch64 to assembly (`cargo rustc -- --emit asm`,
#    its own target dir, one codegen unit so there is one .s file).
# 2. Extracts each loop: the `asm!` K loops between their `// qkern-mca-begin NAME` and
#    `// qkern-mca-end` markers (dotprod, i8mm), and for the intrinsics NEON kernel the
#    self-looping basic block with the most `smlal` in the `aarch64::neon` module, for its
#    `smull` + `smlal2` + `sadalp` variant (`neon::pairs`) the one with the most `sadalp`; for the
#    depthwise (`neon::dwconv`) and codebook (`neon::codebook`, `dotprod::codebook`,
#    `i8mm::codebook`) kernels, per kernel the self-looping block with the most `smlal` /
#    `smull` / `sdot` / `usmmla`;
#    for the bit-shift kernels (`neon::shift`) the one with the most `sshl`; for the PWLQ
#    dequant kernels (`neon::pwlq`) the block loop with the most `tbl` (own table: cycles
#    per 64 codes); for the fused exact-mode PWLQ GEMM kernels their marked `asm!` loops
#    (dotprod 8 rows, NEON 2-row tile; own table: three dot products per output, so one
#    output's useful MACs are a third of the multiplies; compared with the tier's int8
#    GEMM loop).
# 3. Runs `llvm-mca -mtriple=aarch64 -mcpu=CPU` on each loop and on a block of 16
#    independent `sdot` / `smmla` / `smlal` (the model's own peak for that instruction),
#    and prints cycles per iteration, int8 MACs per iteration and per cycle, and the
#    fraction of that peak. MACs count multiply-adds (an op count is twice that):
#    `sdot` .4s = 16, `smmla`/`usmmla` = 32, `smlal`/`smlal2` .4s = 4, `smull`/`smull2`
#    .8h = 8 (the codebook kernel's i8 × i8 products; its `sadalp`s are additions); the
#    shift kernels multiply by shifting: 8 MACs per `eor` (the sign of 8 i16 lanes), shown
#    against the `smull` peak of the lookup kernel they stand beside.
#
# The GEMM kernels' indirect (convolution) entries have no loop of their own: per tap they
# run the raw-row loops (`raw-*` rows; the NEON kernel its one k-loop) on the tap's rows.
#
# llvm-mca's per-CPU models arrived late: LLVM 14 models neoverse-n1/v1 and cortex-a76 with
# the Cortex-A57 model; LLVM ≥ 16 has Neoverse-N2/V1 models, ≥ 17 Neoverse-N1. The
# script uses the newest llvm-mca it finds (`LLVM_MCA=...` overrides) and prints which
# scheduling model it got. If none is installed it tries `apt-get install llvm`, and
# otherwise skips with status 0.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
triple=aarch64-unknown-linux-gnu
cpus=("$@")
[ "${#cpus[@]}" -gt 0 ] || cpus=(neoverse-n1 cortex-a76 neoverse-v1)

find_mca() {
    if [ -n "${LLVM_MCA:-}" ]; then echo "$LLVM_MCA"; return; fi
    local v
    for v in 21 20 19 18 17 16 15 14; do
        command -v "llvm-mca-$v" >/dev/null 2>&1 && { echo "llvm-mca-$v"; return; }
        [ -x "/usr/lib/llvm-$v/bin/llvm-mca" ] && { echo "/usr/lib/llvm-$v/bin/llvm-mca"; return; }
    done
    command -v llvm-mca 2>/dev/null || true
}
mca=$(find_mca)
if [ -z "$mca" ]; then
    sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo -n)
    echo "llvm-mca not found; trying apt-get install llvm" >&2
    if "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends llvm >&2; then
        mca=$(find_mca)
    fi
fi
if [ -z "$mca" ]; then
    echo "SKIP: llvm-mca is not available (install the Debian package llvm)"
    exit 0
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "SKIP: python3 is needed to extract the loops"
    exit 0
fi
if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
    rustup target add "$triple" >&2 || { echo "SKIP: cannot add the $triple target"; exit 0; }
fi

out=target/mca
echo "building qkern-kernels for $triple to assembly ..." >&2
CARGO_TARGET_DIR=$out cargo rustc --quiet --release --target "$triple" -p qkern-kernels --lib -- \
    --emit asm -C codegen-units=1 >&2
asm=$(ls -t "$out/$triple/release/deps"/qkern_kernels-*.s | head -n1)
work=$out/loops
rm -rf "$work"
mkdir -p "$work"

python3 - "$asm" "$work" <<'PY'
import re, sys
src, work = sys.argv[1], sys.argv[2]
lines = open(src).read().splitlines()
loops = {}
# 1. Marked asm! loops (first copy of each: a generic loop is inlined several times).
cur = None
for l in lines:
    s = l.strip()
    m = re.search(r"qkern-mca-begin (.+)$", s)
    if m:
        cur = m.group(1).strip().replace(" ", ":")
        body = []
        continue
    if cur is not None:
        if "qkern-mca-end" in s:
            if cur not in loops:
                loops[cur] = body
            cur = None
        elif s and not s.startswith("//"):
            body.append(s)
# 2. The NEON intrinsics kernel: in every function of the aarch64::neon module, the
#    basic block that branches back to itself with the most smlal.
func, blocks, label = None, {}, None
best = (0, None)
for l in lines:
    if re.match(r"^_ZN\w*7aarch644neon\w*:$", l):
        func, blocks, label = l[:-1], {}, None
        continue
    if func is None:
        continue
    if l.startswith(".Lfunc_end"):
        func = None
        continue
    m = re.match(r"^(\.LBB\w+):", l)
    if m:
        label = m.group(1)
        blocks[label] = []
        continue
    s = l.split("//")[0].strip()
    if label is None or not s or s.startswith("."):
        continue
    blocks[label].append(s)
    if re.match(r"^b(\.\w+)?\s+" + re.escape(label) + r"$", s) or re.search(r"\b(cbnz|cbz|tbnz|tbz)\b.*" + re.escape(label) + r"$", s):
        n = sum(1 for i in blocks[label] if i.startswith("smlal"))
        if n > best[0]:
            best = (n, [label + ":"] + blocks[label])
if best[1]:
    loops["qx8_gemm_4x16c1__neon:k-loop"] = best[1]

# 3. The depthwise and codebook kernels (intrinsics, or one-instruction asm! wrappers the
#    compiler schedules): per kernel, over the functions whose mangled name matches, the
#    self-looping basic block with the most multiply instructions. `pick` keys a block by
#    the kernel it belongs to (None: not one we report); monomorphisations of one generic
#    kernel share a mangled path, so the instruction mix tells them apart.
def self_loops(func_re):
    func, blocks, label = None, {}, None
    for l in lines:
        if re.match(func_re, l):
            func, blocks, label = l[:-1], {}, None
            continue
        if func is None:
            continue
        if l.startswith(".Lfunc_end"):
            func = None
            continue
        m = re.match(r"^(\.LBB\w+):", l)
        if m:
            label = m.group(1)
            blocks[label] = []
            continue
        s = l.split("//")[0].strip()
        if label is None or not s or s.startswith("."):
            continue
        blocks[label].append(s)
        if re.match(r"^b(\.\w+)?\s+" + re.escape(label) + r"$", s) or re.search(r"\b(cbnz|cbz|tbnz|tbz)\b.*" + re.escape(label) + r"$", s):
            yield func, label, blocks[label]

def count(body, op):
    return sum(1 for i in body if re.match(op + r"\b", i) or re.match(op + r"2\b", i))

def keep(name, label, body, score):
    if score > 0 and score > kept.get(name, (0,))[0]:
        kept[name] = (score, [label + ":"] + body)

kept = {}
for kern in ("9p16", "25p16", "up16"):
    # u8 activations (`ushll` widening): the i8 entry differs only in `sshll`.
    for func, label, body in self_loops(r"^_ZN\w*4neon6dwconv\d+dw_" + kern + r"_u8a\w*:$"):
        keep(f"qx8_dwconv_{kern}__neon:tap-pair-loop", label, body, count(body, "smlal"))
for func, label, body in self_loops(r"^_ZN\w*4neon8codebook\w*:$"):
    # u8 activations (`eor` flip); 5-bit decode has the bit plane's `cmtst`/`cmeq`.
    if not any(i.startswith("eor") for i in body):
        continue
    bits = 5 if any(re.match(r"(cmtst|cmeq)\b", i) for i in body) else 4
    keep(f"qx8_codebook{bits}_gemm_4x8c8__neon:k-loop", label, body, count(body, "smull"))
for func, label, body in self_loops(r"^_ZN\w*7dotprod8codebook\w*:$"):
    if not any(i.startswith("eor") for i in body):
        continue
    bits = 5 if any(re.match(r"(cmtst|cmeq)\b", i) for i in body) else 4
    keep(f"qx8_codebook{bits}_gemm_8x8c8__dotprod:k-loop", label, body, count(body, "sdot"))
# i8mm: the u8-activation entry (`usmmla`), the 8-row tile's loop (16 per group).
for func, label, body in self_loops(r"^_ZN\w*4i8mm8codebook\w*:$"):
    if not any(i.startswith("usmmla") for i in body):
        continue
    bits = 5 if any(re.match(r"(cmtst|cmeq)\b", i) for i in body) else 4
    keep(f"qx8_codebook{bits}_gemm_8x8c8__i8mm:k-loop", label, body, count(body, "usmmla"))
# The NEON pair GEMM (`neon::pairs`): per entry (u8 activations: `eor` flip; i8: none)
# the self-looping block with the most `sadalp` (one 16-K group of the 4×4 tile).
for func, label, body in self_loops(r"^_ZN\w*4neon5pairs\w*:$"):
    act = "u8" if any(i.startswith("eor") for i in body) else "i8"
    keep(f"qx8_gemm_4x4c16_sadalp__neon:k-loop-{act}", label, body, count(body, "sadalp"))
# The bit-shift kernels (`neon::shift`): u8 activations (`ushll` widening; the i8 entry
# differs only in `sshll`), per term count the group loop with the most `sshl` (the
# 4-row tile). APoT has two `sshl` per `eor`, PoT one. Each row's `eor` applies the
# sign to 8 lanes, one weight × activation product each: the loop's MACs, written as a
# `// macs:` line for `macs_of` (there is no multiply to count).
shift_macs = {}
for func, label, body in self_loops(r"^_ZN\w*4neon5shift\w*:$"):
    if not any(re.match(r"(ushll|uxtl)\b", i) for i in body):
        continue
    sshl, eor = count(body, "sshl"), count(body, "eor")
    kind = "apot" if sshl > 1.5 * eor else "pot"
    name = f"qx8_shift_{kind}_gemm_4x8c2__neon:k-loop"
    if sshl > kept.get(name, (0,))[0]:
        shift_macs[name] = 8 * eor
    keep(name, label, body, sshl)
# The PWLQ dequant kernels (`neon::pwlq`, no multiplies): per kernel the block loop (one
# iteration = one block of 64 codes) with the most `tbl`. Written as `.dq` files: they
# have their own table (cycles per 64 codes).
dq = {}
for func, label, body in self_loops(r"^_ZN\w*4neon4pwlq\w*dequant\w*:$"):
    kind = "f32" if "dequant_f32" in func else "i8"
    name = f"pwlq4_dequant_{kind}_u64__neon:block-loop"
    score = count(body, "tbl")
    if score > dq.get(name, (0,))[0]:
        dq[name] = (score, [label + ":"] + body)
for name, (score, body) in dq.items():
    open(f"{work}/{name.replace(':', '__')}.dq", "w").write("\n".join(body) + "\n")
for name, (score, body) in kept.items():
    if name in shift_macs:
        body = [f"// macs: {shift_macs[name]}"] + body
    loops[name] = body
# The fused exact-mode PWLQ GEMM loops (marked `asm!`) go to their own table (`.p3`).
for name, body in loops.items():
    ext = "p3" if name.startswith("qs8_pwlq_dot3") else "s"
    open(f"{work}/{name.replace(':', '__')}.{ext}", "w").write("\n".join(body) + "\n")
# Peak blocks: 16 independent accumulators, operands not written.
peaks = {
    "sdot": [f"sdot v{16+i}.4s, v{i%4}.16b, v{4+i%4}.4b[0]" for i in range(16)],
    "smmla": [f"smmla v{16+i}.4s, v{i%4}.16b, v{4+i%4}.16b" for i in range(16)],
    "smlal": [f"smlal v{16+i}.4s, v{i%4}.4h, v{4+i%4}.h[0]" for i in range(16)],
    "smull": [f"smull v{16+i}.8h, v{i%4}.8b, v{4+i%4}.8b" for i in range(16)],
}
for name, body in peaks.items():
    open(f"{work}/peak_{name}.s.peak", "w").write("\n".join(body) + "\n")
PY

ls "$work"/*.s >/dev/null 2>&1 || { echo "no loops extracted from $asm" >&2; exit 1; }
echo "llvm-mca: $mca ($("$mca" --version | sed -n 's/.*LLVM version \([0-9.]*\).*/\1/p'))"
echo "assembly: $asm"
echo
run_mca() { # cpu file -> "cycles_per_iteration"
    "$mca" -mtriple=aarch64 -mcpu="$1" -mattr=+dotprod,+i8mm -iterations=400 "$2" 2>/dev/null |
        awk '/^Iterations:/ {it = $2} /^Total Cycles:/ {c = $3} END {if (it) printf "%.2f", c / it}'
}
sched_model() { # cpu -> name of the scheduling model's first resource
    "$mca" -mtriple=aarch64 -mcpu="$1" -mattr=+dotprod,+i8mm "$work/peak_sdot.s.peak" 2>/dev/null |
        awk '/^Resources:/ {getline; print $3; exit}'
}
macs_of() { # file -> int8 MACs per iteration
    awk '/^[ \t]*(sdot|udot)[ \t]+v[0-9]+\.4s/ {m += 16} /^[ \t]*(smmla|ummla|usmmla)[ \t]/ {m += 32}
         /^[ \t]*(smlal|smlal2|umlal|umlal2)[ \t]+v[0-9]+\.4s/ {m += 4}
         /^[ \t]*(smull|smull2|smlal|smlal2)[ \t]+v[0-9]+\.8h/ {m += 8}
         /^\/\/ macs: [0-9]+$/ {m += $3} END {print m + 0}' "$1"
}
peak_of() { # kernel file -> which peak block applies
    if grep -qE '^[[:space:]]*(smmla|usmmla|ummla)' "$1"; then echo smmla
    elif grep -qE '^[[:space:]]*(sdot|udot)' "$1"; then echo sdot
    elif grep -qE '^[[:space:]]*smull2?[[:space:]]+v[0-9]+\.8h' "$1"; then echo smull
    elif grep -q '^// macs:' "$1"; then echo smull # shift kernels: against the lookup kernel's path
    else echo smlal; fi
}
loop_name() { # file suffix -> the loop's name as printed ("kernel__name loop")
    local n
    n=$(basename "$1" "$2")
    n=${n//__/ }
    echo "${n/ /__}"
}
has_i8mm() { # cpu -> whether the core implements FEAT_I8MM
    case "$1" in
        neoverse-n1 | neoverse-e1 | cortex-a5[357] | cortex-a7[2-7]* | cortex-x1) return 1 ;;
        *) return 0 ;;
    esac
}
has_dotprod() { # cpu -> whether the core implements FEAT_DotProd
    case "$1" in
        cortex-a35 | cortex-a5[357] | cortex-a7[23]) return 1 ;;
        *) return 0 ;;
    esac
}
for cpu in "${cpus[@]}"; do
    if ! "$mca" -mtriple=aarch64 -mcpu="$cpu" -mattr=+dotprod,+i8mm "$work/peak_sdot.s.peak" >/dev/null 2>&1; then
        echo "($cpu: unknown to this llvm-mca, skipped)"
        continue
    fi
    declare -A peak=()
    for p in sdot smmla smlal smull; do
        cyc=$(run_mca "$cpu" "$work/peak_$p.s.peak")
        macs=$(macs_of "$work/peak_$p.s.peak")
        peak[$p]=$(awk -v m="$macs" -v c="$cyc" 'BEGIN {printf "%.2f", m / c}')
    done
    echo "## -mcpu=$cpu (scheduling model resources: $(sched_model "$cpu")*); model peaks, int8 MACs/cycle:" \
        "sdot ${peak[sdot]}, smmla ${peak[smmla]}, smlal ${peak[smlal]}, smull .8h ${peak[smull]}"
    echo
    printf '| %-46s | %8s | %9s | %10s | %9s |\n' "kernel loop" "cyc/iter" "MACs/iter" "MACs/cycle" "% of peak"
    printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..48})" "----------" "-----------" "------------" "-----------"
    for f in "$work"/*.s; do
        if grep -qE '^[[:space:]]*(smmla|usmmla|ummla)' "$f" && ! has_i8mm "$cpu"; then
            continue # the core has no i8mm: its model's numbers would mean nothing
        fi
        if grep -qE '^[[:space:]]*(sdot|udot)' "$f" && ! has_dotprod "$cpu"; then
            continue # nor dotprod (Cortex-A53: the NEON kernels only)
        fi
        name=$(loop_name "$f" .s)
        cyc=$(run_mca "$cpu" "$f")
        macs=$(macs_of "$f")
        p=$(peak_of "$f")
        awk -v n="$name" -v c="$cyc" -v m="$macs" -v pk="${peak[$p]}" -v pn="$p" \
            'BEGIN {r = m / c; printf "| %-46s | %8.2f | %9d | %10.2f | %7.1f %% of %s |\n", n, c, m, r, 100 * r / pk, pn}'
    done
    echo
    if ls "$work"/*.dq >/dev/null 2>&1; then
        # Dequant loops: one iteration = 64 codes (32 value bytes + 8 region bytes read).
        printf '| %-46s | %16s | %14s |\n' "dequant loop" "cycles / 64 codes" "code bytes/cyc"
        printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..48})" "------------------" "----------------"
        for f in "$work"/*.dq; do
            name=$(loop_name "$f" .dq)
            cyc=$(run_mca "$cpu" "$f")
            awk -v n="$name" -v c="$cyc" 'BEGIN {printf "| %-46s | %16.2f | %14.2f |\n", n, c, 40 / c}'
        done
        echo
    fi
    if ls "$work"/*.p3 >/dev/null 2>&1; then
        # Fused exact-mode PWLQ GEMM: each output takes three dot products (centre codes,
        # tail codes, tail signs), so its useful MACs are a third of the multiplies. The
        # dotprod loop does one K step (4 K) of 8 rows x 4 columns per iteration, the NEON
        # one two K steps of 2 rows x 4 columns. "vs int8" divides by the MACs/cycle of
        # the same tier's int8 GEMM loop in the table above (issue 6's target: >= 33 %).
        printf '| %-46s | %8s | %16s | %17s | %9s | %8s |\n' "fused PWLQ loop" "cyc/iter" "useful MACs/iter" "useful MACs/cycle" "% of peak" "vs int8"
        printf '|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..48})" "----------" "------------------" "-------------------" "-----------" "----------"
        for f in "$work"/*.p3; do
            if grep -qE '^[[:space:]]*sdot' "$f"; then
                has_dotprod "$cpu" || continue
                base="$work/qx8_gemm_8x8c4__dotprod__packed.s"
            else
                base="$work/qx8_gemm_4x16c1__neon__k-loop.s"
            fi
            name=$(loop_name "$f" .p3)
            cyc=$(run_mca "$cpu" "$f")
            macs=$(macs_of "$f")
            p=$(peak_of "$f")
            bc=$(run_mca "$cpu" "$base")
            bm=$(macs_of "$base")
            awk -v n="$name" -v c="$cyc" -v m="$macs" -v pk="${peak[$p]}" -v pn="$p" -v bc="$bc" -v bm="$bm" \
                'BEGIN {u = m / 3; r = u / c; printf "| %-46s | %8.2f | %16d | %17.2f | %6.1f %% of %s | %6.1f %% |\n", n, c, u, r, 100 * r / pk, pn, 100 * r / (bm / bc)}'
        done
        echo
    fi
done
