#!/usr/bin/env python3
"""qkern vs onnxruntime on the same shapes, one run after the other, as a markdown table.

Runs `qkern bench --json` once per ISA tier, then ../shared/tools/peer_bench.py on the
same shapes, and prints GOPS medians, % of each tier's probed peak, and the ratio of
each tier to onnxruntime measured in this run.

    python3 scripts/peer_report.py --python /path/to/venv/bin/python \
        --isa avx2,avx512vnni --shapes sq1024,sq2048,bert_ffn1,r50_conv3_3x3 [--threads 1] [--min-time 1]

`--op conv` / `--op dwconv` time convolution layers against onnxruntime's NHWC QLinearConv
(names from peer_bench.py's CONVS) when the qkern binary supports them.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def qkern_bench(binary, isa, names, threads, min_time, op):
    cmd = [binary, "bench", "--json", "--isa", isa, "--threads", str(threads), "--min-time", str(min_time), "--op", op]
    for s in names:
        cmd += ["--shape", s]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return {r["shape"]: r for r in json.loads(out)}


def peer_bench(python, names, threads, op):
    tool = os.path.join(ROOT, "..", "shared", "tools", "peer_bench.py")
    path = os.path.join(ROOT, "target", "peer_report_ort.json")
    if op == "gemm":
        sel = ["--ops", "MatMulInteger", "--shapes", ",".join(names), "--convs", "none"]
    else:
        sel = ["--ops", "QLinearConv", "--shapes", "none", "--convs", ",".join(names)]
    cmd = [python, tool, *sel, "--threads", str(threads), "--json", path]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(path) as f:
        doc = json.load(f)
    return {r["shape"]: r for r in doc["results"]}, doc.get("onnxruntime"), doc.get("isa")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="a python with onnxruntime, onnx and numpy")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "qkern"))
    ap.add_argument("--isa", default="avx2,avx512vnni", help="comma-separated tiers to time")
    ap.add_argument("--shapes", default="sq1024,sq2048,bert_ffn1,r50_conv3_3x3,dec4096,dec11008,mbv2_pw_24,mbv2_pw_384")
    ap.add_argument("--op", default="gemm", choices=["gemm", "conv", "dwconv"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-time", type=float, default=1.0)
    args = ap.parse_args()
    names = [s for s in args.shapes.split(",") if s]
    tiers = [t for t in args.isa.split(",") if t]

    ours = {t: qkern_bench(args.binary, t, names, args.threads, args.min_time, args.op) for t in tiers}
    ort, version, ort_isa = peer_bench(args.python, names, args.threads, args.op)

    head = ["shape"]
    for t in tiers:
        head += [f"{t} GOPS", "% peak", f"{t}/ort"]
    head += ["onnxruntime GOPS"]
    print(f"\nqkern ({', '.join(tiers)}) then {ort_isa or version}, {args.threads} thread(s), GOPS medians\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for s in names:
        o = ort.get(s, {}).get("gops_median")
        row = [s]
        for t in tiers:
            r = ours[t].get(s)
            g = r and r.get("gops_median")
            frac = r and r.get("peak_fraction")
            row += [f"{g:.0f}" if g else "-", f"{100 * frac:.0f}" if frac else "-", f"{g / o:.2f}" if g and o else "-"]
        row += [f"{o:.0f}" if o else "-"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
