//! End-to-end tests of the real `lorchestra` binary.

const BIN: &str = env!("CARGO_BIN_EXE_lorchestra");

#[test]
fn keeps_the_command_line_contract() {
    testkit::assert_cli_contract(BIN, "lorchestra", env!("CARGO_PKG_VERSION"));
}
