//! Buildbot's generic change hook, `POST /change_hook/base`: arbitrary
//! bytes as the form body, read as the hook reads a delivery labelled
//! `application/x-www-form-urlencoded` (first `is_form`, then the form
//! parser). A malformed form must be an error (a 400), never a panic.
#![no_main]

use bbc_runtime::changes::webhook::{base_change, is_form};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if is_form(Some("application/x-www-form-urlencoded"), data) {
        let _ = base_change(data);
    }
});
