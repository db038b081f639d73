//! export-nb's modules in layers, lowest first: a module uses only modules of lower layers (see
//! `testkit::layering`). ARCHITECTURE.md lists the same.

use std::path::Path;

#[test]
fn export_nb_modules_keep_their_layers() {
    testkit::layering::assert_layers(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[
            // The flags; the output folder's layout; a notebook's inline metadata; what to export.
            "cli site pep723 config::sources",
            // What to do about the failures people meet, in one line each.
            "hints meta",
            // The checked settings; environments; marimo's frontend; local imports; the server.
            "config envs frontend imports serve preview search",
            "discover index thumbnail",
            "export manifest",
            // Every input judged, and the dry run, before anything runs.
            "plan",
            // What a run leaves: the manifest, the index data, the report.
            "report",
            // The batch; watch's rounds of it; the fuzz entry points.
            "run watch fuzz",
        ],
    );
}
