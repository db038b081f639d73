//! A `.py` file's text: export-nb's PEP 723 header parser finds exactly the `script` block the
//! PEP's reference regular expression finds (the oracle), or refuses the same inputs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    export_nb::fuzz::pep723(data);
});
