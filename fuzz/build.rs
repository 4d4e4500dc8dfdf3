//! Copies the consume stage's private fast decoder (`decode_fast` and its
//! helpers in crates/forewarn-ingest/src/consume.rs, from its doc comment
//! up to the test module) into OUT_DIR, so the `decode_fast` target fuzzes
//! the code as it is in the tree without making it public. If the markers
//! move, the target gets a stub that declines everything and the build
//! warns.
use std::{env, fs, path::PathBuf};

const SOURCE: &str = "../crates/forewarn-ingest/src/consume.rs";
const START: &str = "/// The common case without serde";
const END: &str = "#[cfg(test)]";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("decode_fast.rs");
    let src = fs::read_to_string(SOURCE).unwrap_or_default();
    let code = src
        .find(START)
        .and_then(|s| src[s..].find(END).map(|e| src[s..s + e].to_owned()));
    let code = code.unwrap_or_else(|| {
        println!(
            "cargo:warning=decode_fast not found in {SOURCE}; the decode_fast target is a stub"
        );
        "fn decode_fast(_: &[u8], _: Option<&[u8]>, _: &Schema) -> Option<Reading> { None }\n"
            .to_owned()
    });
    fs::write(out, code).unwrap();
}
