//! A `.py` file as export-nb's discovery reads it: the `marimo.App` check and the PEP 723
//! header, and the environment the header asks for.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    export_nb::fuzz::notebook(data);
});
