//! End-to-end tests of the real `export-nb` binary.

const BIN: &str = env!("CARGO_BIN_EXE_export-nb");

#[test]
fn keeps_the_command_line_contract() {
    testkit::assert_cli_contract(BIN, "export-nb", env!("CARGO_PKG_VERSION"));
}
