//! export-nb's manifest (`<out>/.export-nb/manifest.json`), as the run in which every notebook
//! is gone reads it to remove their pages. Beside the output folder: `outside.html`, and in it
//! a link `out/up` to the folder above; neither may lose a file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let root = tempfile::tempdir().expect("a temporary folder");
    let root = root.path();
    std::fs::create_dir_all(root.join("out")).expect("out/");
    std::fs::write(root.join("outside.html"), "not export-nb's").expect("outside.html");
    std::os::unix::fs::symlink(root, root.join("out/up")).expect("out/up");
    export_nb::fuzz::manifest(root, data);
});
