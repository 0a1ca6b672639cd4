//! Declares the cfg values Anchor's generated code tests (`target_os = "solana"`), so the
//! `unexpected_cfgs` lint knows them without an `allow`.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(target_os, values(\"solana\"))");
}
