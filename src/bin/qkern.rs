//! `qkern`: the command-line tool.
fn main() {
    println!("qkern {}", qkern::VERSION);
}
