//! Values in shell scripts stay data (`fanout::shell`), judged by a real `sh`. A test binary of
//! its own: the runner's tests make their process a subreaper that reaps any child.

use fanout::shell::{HoleError, Place, ScriptBuilder};
use proptest::prelude::*;
use testkit::shell_oracle::{self, HOSTILE, Piece, VAR};

/// A script from a template where each `@` is a hole for [`VAR`].
fn script(template: &str) -> Result<String, HoleError> {
    let mut b = ScriptBuilder::new();
    let mut parts = template.split('@');
    b.code(parts.next().unwrap_or(""));
    for part in parts {
        b.value(VAR);
        b.code(part);
    }
    b.build()
}

fn refused(template: &str) -> Place {
    match script(template) {
        Ok(s) => panic!("{template:?} was accepted as {s:?}"),
        Err(e) => e.place,
    }
}

#[test]
fn each_quoting_state_gets_its_own_reference() {
    let cases = [
        ("echo @", "echo \"${FANOUT_TEST_VALUE}\""),
        ("echo \"a @ b\"", "echo \"a ${FANOUT_TEST_VALUE} b\""),
        ("echo 'a @ b'", "echo 'a '\"${FANOUT_TEST_VALUE}\"' b'"),
        ("cat <<E\n@\nE\n", "cat <<E\n${FANOUT_TEST_VALUE}\nE\n"),
        (
            "echo \"$(echo @)\"",
            "echo \"$(echo \"${FANOUT_TEST_VALUE}\")\"",
        ),
    ];
    for (template, expected) in cases {
        assert_eq!(script(template).unwrap(), expected, "{template:?}");
    }
}

#[test]
fn places_where_a_value_cannot_be_data_are_refused_with_the_position() {
    let cases = [
        ("echo \\@", Place::AfterBackslash),
        ("echo \"x\\@\"", Place::AfterBackslash),
        ("echo $@", Place::AfterDollar),
        ("echo \"$@\"", Place::AfterDollar),
        ("echo `echo @`", Place::Backticks),
        ("echo \"`echo @`\"", Place::Backticks),
        ("echo ${x:-@}", Place::ParameterExpansion),
        ("echo $((1 + @))", Place::Arithmetic),
        ("echo $(( $(echo @) ))", Place::Arithmetic),
        ("((x = @))", Place::Arithmetic),
        ("cat <<'E'\n@\nE\n", Place::QuotedHereDoc),
        ("cat <<\"E\"\n@\nE\n", Place::QuotedHereDoc),
        ("cat <<@\nx\n", Place::HereDocDelimiter),
        ("eval echo @", Place::Evaluated("eval")),
        ("x=1 eval \"echo $(printf %s @)\"", Place::Evaluated("eval")),
        ("let x=@", Place::Evaluated("let")),
        ("[[ @ -eq 1 ]]", Place::Evaluated("[[")),
        ("echo $'a @'", Place::AnsiCQuoted),
        ("echo $'a\\'b' @", Place::AnsiCQuoted),
        ("''eval echo @", Place::Evaluated("eval")),
        ("\"eval\" echo @", Place::Evaluated("eval")),
        ("trap 'echo @' EXIT", Place::Evaluated("trap")),
        (". ./@", Place::Evaluated(".")),
        ("@ --help", Place::CommandName),
        ("./@ --help", Place::CommandName),
        ("\"@\"=1 true", Place::CommandName),
        ("exec @", Place::CommandName),
        ("x=1; if @; then :; fi", Place::CommandName),
        ("$(printf %s @) arg", Place::CommandName),
        ("echo $(printf %s @)", Place::Split),
        ("for x in $(echo @); do :; done", Place::Split),
        ("printf %s a=$(printf %s @)", Place::Split),
        ("`true`eval x @", Place::ComputedCommand),
        ("$CMD --flag @", Place::ComputedCommand),
        ("true | @", Place::CommandName),
        ("export @", Place::VariableName("export")),
        ("read -r @", Place::VariableName("read")),
        ("printf -v @ %s x", Place::VariableName("printf -v")),
    ];
    for (template, place) in cases {
        assert_eq!(refused(template), place, "{template:?}");
    }
    let e = script("echo ok\nprintf '%s' `cat @`").unwrap_err();
    assert_eq!((e.line, e.column), (2, 18));
    assert_eq!(
        e.to_string(),
        "a placeholder inside backticks: write $(...) instead of `...` (line 2, column 18: \
         `printf '%s' `cat {{…}}``)"
    );
    let nul = ScriptBuilder::new().code("echo a\0b").build().unwrap_err();
    assert_eq!(nul.place, Place::Nul);
}

#[test]
fn the_lexer_knows_where_refusals_end() {
    // After the construct that refused inside it, an ordinary place again.
    for template in [
        "eval x; echo @",
        "[[ -n x ]] && echo @",
        "echo $((1 + 2)) @",
        "echo ${x:-a} \"@\"",
        "echo `echo a` @",
        "cat <<'E'\nx\nE\necho @",
        "echo \"$(case x in a) echo y;; (b|c) echo z;; esac) @\"",
        "case @ in a) echo @;; *) echo \"@\";; esac; echo '@'",
        "echo $'ab' @",
        "# a comment's @ is inert\necho @",
        "cat <<E; echo @\n${x} $(echo \"@\") \\$ @\nE\necho @",
        "cat <<-E\n\t@\n\tE\necho '@'",
        "f() { echo \"$1\"; }; f @",
        "export X=@ Y=\"@\"; A=@ B='@' env",
        "printf '%s' @ > @; cat < @ 2>@",
        "command -v @; exec 3>@",
        "for x in @ @; do echo \"$x\"; done",
        "x=$(printf %s @); case $(echo @) in *) echo \"$(echo @)\";; esac > $(echo @)",
    ] {
        let s = script(template).unwrap_or_else(|e| panic!("{template:?}: {e}"));
        assert!(!s.contains('@'), "{s}");
    }
}

/// Templates where the value is printed between brackets, and what `sh` must print.
fn printing_templates(value: &str) -> Vec<(&'static str, String)> {
    let v = value;
    let subst = value.trim_end_matches('\n');
    vec![
        ("printf '[%s]' @", format!("[{v}]")),
        ("printf '[%s]' x@y", format!("[x{v}y]")),
        ("printf '[%s]' @@", format!("[{v}{v}]")),
        ("printf '[%s]' \"<@>\"", format!("[<{v}>]")),
        ("printf '[%s]' '<@>'", format!("[<{v}>]")),
        ("printf '[%s]' \"<'@'>\"", format!("[<'{v}'>]")),
        ("printf '[%s]' '<\"@\">'", format!("[<\"{v}\">]")),
        ("printf '[%s]' \"$(printf '%s' @)\"", format!("[{subst}]")),
        (
            "printf '[%s]' \"$(printf '%s' \"@\")\"",
            format!("[{subst}]"),
        ),
        ("printf '[%s]' \"$(printf '%s' '@')\"", format!("[{subst}]")),
        ("cat <<EOF\n[@]\nEOF", format!("[{v}]\n")),
        ("cat <<-EOF\n\t[@]\n\tEOF", format!("[{v}]\n")),
        ("a=@; printf '[%s]' \"$a\"", format!("[{v}]")),
        ("# @ $(touch PWNED)\nprintf '[%s]' ok", "[ok]".to_owned()),
        ("f() { printf '[%s]' \"$1\"; }; f @", format!("[{v}]")),
        (
            "case @ in *) printf '[%s]' \"$(printf %s @)\";; esac",
            format!("[{subst}]"),
        ),
    ]
}

#[test]
fn sh_prints_exactly_the_value_in_every_quoting_state() {
    let dir = tempfile::tempdir().unwrap();
    for value in HOSTILE {
        for (template, expected) in printing_templates(value) {
            let s = script(template).unwrap();
            let (code, out) = shell_oracle::run(&s, value, dir.path());
            assert_eq!(
                (code, out),
                (Some(0), format!("{expected}\n--- stderr\n")),
                "{template:?} with {value:?}: {s:?}"
            );
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any script the builder accepts treats any value as data (the fuzz target
    /// `shell_values` runs the same oracle for longer).
    #[test]
    fn an_accepted_script_treats_any_value_as_data(
        code in proptest::collection::vec(any::<u8>(), 1..40),
        value in proptest::collection::vec(any::<u8>(), 0..12),
    ) {
        let mut b = ScriptBuilder::new();
        for piece in shell_oracle::pieces(&code) {
            match piece {
                Piece::Code(c) => { b.code(&c); }
                Piece::Hole => { b.value(VAR); }
            }
        }
        if let Ok(s) = b.build() {
            let dir = tempfile::tempdir().unwrap();
            let value = shell_oracle::value(&value);
            if let Err(e) = shell_oracle::check(&s, &value, dir.path()) {
                prop_assert!(false, "{e}");
            }
        }
    }
}
