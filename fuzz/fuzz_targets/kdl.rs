//! The KDL front end on arbitrary text: the parser and the whole compiler
//! (names, types, lowering) must answer with diagnostics, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = bbc_compiler::syntax::parse(text);
    let _ = bbc_compiler::compile_source("fuzz.kdl", text);
});
