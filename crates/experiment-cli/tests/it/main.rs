//! End-to-end tests of the real `parallamr` binary.

const BIN: &str = env!("CARGO_BIN_EXE_parallamr");

#[test]
fn keeps_the_command_line_contract() {
    testkit::assert_cli_contract(BIN, "parallamr", env!("CARGO_PKG_VERSION"));
}
