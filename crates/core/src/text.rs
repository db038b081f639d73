//! Small text helpers the runner, the reporters and the tools share.

/// The last `n` lines of `text` (trailing blank space left out), as a slice of it: for the
/// tail of a log, of captured output or of an error's detail.
pub fn last_lines(text: &str, n: usize) -> &str {
    let text = text.trim_end();
    if n == 0 {
        return "";
    }
    let mut seen = 0;
    for (i, b) in text.bytes().enumerate().rev() {
        if b == b'\n' {
            seen += 1;
            if seen == n {
                return &text[i + 1..];
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_lines_are_a_slice_of_the_text() {
        assert_eq!(last_lines("a\nb\nc\n\n", 2), "b\nc");
        assert_eq!(last_lines("a\nb\nc", 5), "a\nb\nc");
        assert_eq!(last_lines("a\nb\nc", 1), "c");
        assert_eq!(last_lines("a\nb", 0), "");
        assert_eq!(last_lines("", 3), "");
        assert_eq!(last_lines("only\n", 1), "only");
    }
}
