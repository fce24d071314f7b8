//! qkern-kernels: the rooms with sharp tools in them.
//!
//! Every intrinsic, `asm!` block and `unsafe` operation of qkern lives in this crate.
//! A kernel here knows nothing of threads, allocation or errors: the safe driver in the
//! `qkern` crate validates every shape, stride and parameter before it calls one.
//!
//! * [`reference`] — the oracle: naive loops, i64 accumulation, the one definition of
//!   every rounding rule. Every production kernel is tested bit-exactly against it.
//! * [`generic`] — portable production kernels on the packed layouts.
//! * [`pack`] — the packers; each kernel names the packed format it reads.
//! * [`testing`] (feature `testing`) — the one tester every kernel goes through.
#![no_std]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "testing")]
extern crate alloc;

pub mod generic;
pub mod pack;
pub mod reference;
pub mod types;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;
#[cfg(target_arch = "aarch64")]
pub mod aarch64;

#[cfg(feature = "testing")]
pub mod testing;

pub use types::*;
