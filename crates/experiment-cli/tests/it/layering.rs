//! parallamr's modules in layers, lowest first: a module uses only modules of lower layers (see
//! `testkit::layering`). ARCHITECTURE.md lists the same.

use std::path::Path;

#[test]
fn parallamr_modules_keep_their_layers() {
    testkit::layering::assert_layers(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[
            // Prices and budgets; --flatten; `init`; parameter columns; rate limits; settings.
            // The state file of --batch.
            "batch::state cost flatten init params rate settings",
            // The HTTP the hosted providers share.
            "providers::http",
            // The experiments and templates; the provider trait; a result row; the summary per
            // model.
            "experiments providers row summary",
            // The response cache; one results destination; --command; the HTTP providers; the
            // grader's rubric and verdicts; the results page.
            "cache sink shell_template providers::mock providers::ollama providers::openai \
             providers::anthropic providers::gemini grade \
             view view::results",
            // The flags; every results destination; the command provider.
            "cli writer providers::command",
            // -o path templates; the checks of the answers; `parallamr batch status|cancel`.
            "paths judge batch::command",
            // The command line's settings of a run.
            "plan::args",
            // Every input judged before anything runs.
            "plan",
            // Per-provider limits; the tally of a sweep.
            "limit tally",
            // One experiment: cache, budget, call.
            "call",
            // --batch: the batches of a run; the dry run; where the rows of a run go.
            "batch dryrun run::output",
            // Its batches polled.
            "batch::poll",
            // Its batches sent.
            "batch::submit",
            // The sweep; the fuzz entry points.
            "run fuzz",
        ],
    );
}
