#!/bin/sh
# Installs qkern's C library for engines: the static and shared libraries, the header
# and two pkg-config files, `qkern.pc` (links libqkern.so) and `qkern-static.pc` (links
# libqkern.a and the system libraries the Rust runtime needs).
#
#   scripts/install.sh [PREFIX]          # default /usr/local; builds with cargo first
#
#   cc app.c $(pkg-config --cflags --libs qkern)          # shared
#   cc app.c $(pkg-config --cflags --libs qkern-static)   # static
#
# With a PREFIX outside the linker's search path, add PREFIX/lib/pkgconfig to
# PKG_CONFIG_PATH, and PREFIX/lib to LD_LIBRARY_PATH (or -Wl,-rpath) for the shared one.
set -eu
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
case $prefix in
    /*) ;;
    *) prefix=$(pwd)/$prefix ;;
esac
cargo build --release --lib
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
install -d "$prefix/lib/pkgconfig" "$prefix/include"
install -m 644 include/qkern.h "$prefix/include/qkern.h"
install -m 644 target/release/libqkern.a "$prefix/lib/libqkern.a"
install -m 755 target/release/libqkern.so "$prefix/lib/libqkern.so"
# What a static Rust library needs from libc on Linux (rustc --print native-static-libs).
private="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
common="prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Version: $version
Cflags: -I\${includedir}"
cat > "$prefix/lib/pkgconfig/qkern.pc" <<PC
$common
Name: qkern
Description: SIMD CPU kernels for quantized neural-network inference (C ABI, shared library)
Libs: -L\${libdir} -lqkern
PC
cat > "$prefix/lib/pkgconfig/qkern-static.pc" <<PC
$common
Name: qkern-static
Description: SIMD CPU kernels for quantized neural-network inference (C ABI, static library)
Libs: \${libdir}/libqkern.a $private
PC
echo "installed qkern $version into $prefix (lib/libqkern.{a,so}, include/qkern.h, lib/pkgconfig/qkern{,-static}.pc)"
