//! lorchestra's modules in layers, lowest first: a module uses only modules of lower layers
//! (see `testkit::layering`). ARCHITECTURE.md lists the same.

use std::path::Path;

#[test]
fn lorchestra_modules_keep_their_layers() {
    testkit::layering::assert_layers(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[
            // A run folder's names; inputs patterns; payload values; the project folder; the
            // cache file; parameter files and `--set`; metrics files; resources needed and had.
            "layout patterns payload project cache::file params metrics resources",
            // The flags (amounts of `--resources`); the checked model; the run record.
            "cli model store",
            // The raw file types; what jobs wait for; a job's value; the report; the checked
            // options (plan); the up-to-date decision; the record's
            // changes and journal.
            "raw waits output report comparepage plan plan::options cache store::journal",
            // A job's definition; placeholders; the record's writer; where each job runs.
            "jobs placeholders store::writer plan::placement",
            // What a run's jobs share; loading a pipeline; loops; admission by resources.
            "context load looping admission",
            // A job to a command; segments; up to date or not.
            "job segment uptodate",
            // `graph`; the dry run; one segment's batch; runs compared (params, metrics).
            "graph dryrun batch compare",
            // A run's life; the fuzz entry points.
            "run fuzz",
        ],
    );
}
