#!/bin/sh
# RUSTC_WRAPPER for the stable CI fuzz build (.ci/run): every crate gets libFuzzer's
# coverage instrumentation from RUSTFLAGS except qkern_kernels, whose SIMD kernels are
# compiled as in a release build. Instrumenting them tripled the build time on 2 cores;
# the fuzz checks still run every kernel against the reference, and the driver code
# that picks shapes, tails and paths for them is instrumented.
rustc=$1
shift
case " $* " in
*" --crate-name qkern_kernels "*)
    for arg; do
        shift
        case $arg in
        -Cpasses=sancov-module | -Cllvm-args=-sanitizer-coverage-*) ;;
        *) set -- "$@" "$arg" ;;
        esac
    done
    ;;
esac
exec "$rustc" "$@"
