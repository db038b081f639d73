//! Tests of what users install (`cargo xtask dist` writes it; `cargo xtask test` runs that
//! first): the wheels, the release archives, and the GitHub Pages recipe. Behind the feature
//! `dist-tests`, as the Slurm and browser tests are behind theirs.
#![expect(
    clippy::disallowed_methods,
    reason = "these tests run uv, pip, auditwheel and the installed tools as a user would"
)]

mod dist;
