//! The core's modules in layers, lowest first: a module uses only modules of lower layers (see
//! `testkit::layering`). ARCHITECTURE.md draws the same list.

use std::path::Path;

#[test]
fn the_core_modules_keep_their_layers() {
    testkit::layering::assert_layers(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[
            // Foundations: time and text, files, memory, cancellation, strategies; the facades
            // of `process` and `shell`; `/proc` and Slurm's settings; counted resources.
            "time text fsutil mem cancel strategy process process::procs process::slurm shell resources",
            // What a task's end is; what a worker shares; locks; a command, the guardian; the
            // words of a shell command.
            "result worker runlock process::allocation process::guardian shell::code",
            // Events; exit codes; retries; a process's output, its group, its tree; the lexer.
            "events exit retry process::command process::output process::sys process::tree shell::lex",
            // Pool settings; the reporters; how a process is wired and spawned.
            "config reporters process::pipes process::spawn process::wire",
            "task process::packed process::salloc",
            "process::runner",
            // The ready queue; the fork server; Ctrl-C (which kills every job).
            "graph process::forkserver process::serve interrupt pool::owner",
            "pool pool::workers",
            "map",
        ],
    );
}
