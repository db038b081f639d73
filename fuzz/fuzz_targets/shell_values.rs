//! Values in shell scripts stay data (`fanout::shell`), with a real `sh` as the oracle:
//! `SCRIPT NUL VALUE`, the script's bytes picking code tokens and holes
//! (`testkit::shell_oracle`). Every script the builder accepts is run twice, with the value
//! and with a plain stand-in: what the value changes must be only where it is printed.
#![no_main]

use fanout::shell::ScriptBuilder;
use libfuzzer_sys::fuzz_target;
use testkit::shell_oracle::{self, Piece, VAR};

fuzz_target!(|data: &[u8]| {
    let (code, value) = fanout_fuzz::split_nul(data);
    let mut script = ScriptBuilder::new();
    for piece in shell_oracle::pieces(code) {
        match piece {
            Piece::Code(c) => script.code(&c),
            Piece::Hole => script.value(VAR),
        };
    }
    if !script.has_values() {
        return;
    }
    let Ok(script) = script.build() else { return };
    let dir = tempfile::tempdir().expect("a temporary folder");
    let value = shell_oracle::value(value.unwrap_or(b"$(touch PWNED) 'a b' *"));
    if let Err(e) = shell_oracle::check(&script, &value, dir.path()) {
        panic!("{e}");
    }
});
