//! `--thumbnails`: each page, once exported, opened in headless Chromium and photographed for
//! its card and link previews, as `marimo export thumbnail` does with Playwright. The page is
//! served from the output folder on 127.0.0.1 for the run (marimo's frontend runs only over
//! HTTP), Chromium waits until the page is idle (its cells rendered; at most
//! `RENDER_BUDGET_MS` of the page's own time), and the picture, 600 x 315 pixels (an 800 x 420
//! page, marimo's column and its margins, at three quarters; the shape link previews use),
//! goes beside the page as `<page>.thumb.png`. A picture with nothing drawn below marimo's
//! header (the frontend not yet done, on a busy machine) is taken again with longer waits. It runs in the export's task, so in the same pool, and only for a page
//! just exported: an unchanged page keeps its picture. A notebook with a picture of its own
//! (`[tool.marimo.opengraph]`'s `image`, or `__marimo__/assets/<stem>/opengraph.png`) keeps it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use fanout::{CancelToken, Command, ProcessRunner, Sink};

use crate::serve::SiteServer;

/// How long, in the page's own (virtual) time, Chromium lets it render: each try of a page
/// found blank waits longer.
const RENDER_BUDGETS_MS: [u32; 3] = [10_000, 30_000, 60_000];

/// The longest a photograph may take, in real time.
const TIMEOUT: Duration = Duration::from_secs(90);

/// Chromium, and the output folder served for it.
#[derive(Debug)]
pub(crate) struct Thumbnailer {
    chromium: PathBuf,
    server: SiteServer,
}

impl Thumbnailer {
    /// Serve `output` on a free port of 127.0.0.1 until dropped.
    pub(crate) fn start(chromium: PathBuf, output: &Path) -> Result<Self> {
        Ok(Thumbnailer {
            chromium,
            server: SiteServer::start(output, "127.0.0.1:0")?,
        })
    }

    /// Photograph the page `page` (a path in the site, already in place) into
    /// `<output>/<page>.thumb.png`.
    pub(crate) fn photograph(
        &self,
        runner: &ProcessRunner,
        output: &Path,
        page: &Path,
        cancel: &CancelToken,
    ) -> Result<(), String> {
        // A fresh profile per photograph, in the run's temporary folder (removed with it).
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = output
            .join(crate::site::STATE_DIR)
            .join("tmp")
            .join(format!("chromium-{n}"));
        std::fs::create_dir_all(&profile).map_err(|e| format!("a profile folder: {e}"))?;
        let mut result = Err(String::new());
        for budget in RENDER_BUDGETS_MS {
            result = self.shoot(runner, page, &profile, budget, cancel);
            if !result.as_ref().is_ok_and(|png| !drawn(png)) {
                break;
            }
        }
        let _ = std::fs::remove_dir_all(&profile);
        let png = result?;
        let target = crate::site::path_inside(output, &crate::site::thumb_path(page))
            .ok_or_else(|| "the picture's path is outside the site".to_owned())?;
        fanout::fsutil::write_atomic(&target, &png)
            .map_err(|e| format!("could not write {}: {e}", target.display()))
    }

    /// One photograph of `page`, given `budget_ms` of the page's time to render.
    fn shoot(
        &self,
        runner: &ProcessRunner,
        page: &Path,
        profile: &Path,
        budget_ms: u32,
        cancel: &CancelToken,
    ) -> Result<Vec<u8>, String> {
        let shot = profile.join("thumb.png");
        let _ = std::fs::remove_file(&shot);
        let url = format!("{}{}", self.server.url, crate::site::url_path(page));
        let command = Command::new(&self.chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--mute-audio",
                "--window-size=800,420",
                "--force-device-scale-factor=0.75",
            ])
            .arg(format!("--virtual-time-budget={budget_ms}"))
            .arg(format!(
                "--user-data-dir={}",
                profile.join("profile").display()
            ))
            .arg(format!("--screenshot={}", shot.display()))
            .arg(url)
            .timeout(Some(TIMEOUT))
            .job_name(format!("export-nb thumbnail {}", page.display()))
            .stdout(Sink::Capture { max_bytes: 4096 })
            .stderr(Sink::Capture {
                max_bytes: 16 * 1024,
            });
        let out = runner
            .run(&command, cancel)
            .map_err(|e| format!("Chromium did not run: {e}"))?;
        std::fs::read(&shot).map_err(|_| {
            format!(
                "Chromium wrote no picture (exit {:?}): {}",
                out.ending,
                out.stderr.text().lines().last().unwrap_or("")
            )
        })
    }
}

/// Whether the photograph shows the page drawn: below marimo's header bar and away from its
/// corner badge, more than a few pixels differ from the background (the most common colour).
/// One that cannot be read counts as drawn (it is kept rather than taken again).
fn drawn(png: &[u8]) -> bool {
    let Ok(mut reader) = png::Decoder::new(std::io::Cursor::new(png)).read_info() else {
        return true;
    };
    let Some(size) = reader.output_buffer_size() else {
        return true;
    };
    let mut buf = vec![0; size];
    let Ok(frame) = reader.next_frame(&mut buf) else {
        return true;
    };
    let channels = frame.color_type.samples();
    if frame.bit_depth != png::BitDepth::Eight || channels < 3 {
        return true;
    }
    let (w, h) = (frame.width as usize, frame.height as usize);
    let pixel = |x: usize, y: usize| {
        let i = (y * w + x) * channels;
        (buf[i], buf[i + 1], buf[i + 2])
    };
    let rows = h / 10..h - h / 10;
    let mut counts = std::collections::HashMap::new();
    for y in rows.clone() {
        for x in 0..w {
            *counts.entry(pixel(x, y)).or_insert(0usize) += 1;
        }
    }
    let background = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map_or(0, |(_, n)| *n);
    let total = rows.len() * w;
    (total - background) * 200 > total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_of(w: u32, h: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().unwrap();
        let data: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .flat_map(|(x, y)| pixel(x, y))
            .collect();
        writer.write_image_data(&data).unwrap();
        drop(writer);
        out
    }

    #[test]
    fn a_blank_page_is_told_from_a_drawn_one() {
        // A header bar and a corner badge on white: blank.
        let blank = png_of(600, 315, |x, y| {
            if y < 20 || (x > 520 && y > 300) {
                [30, 90, 200]
            } else {
                [255, 255, 255]
            }
        });
        assert!(!drawn(&blank));
        // Lines of text in the middle: drawn.
        let text = png_of(600, 315, |x, y| {
            if (100..200).contains(&y) && y % 6 == 0 && x % 3 == 0 {
                [0, 0, 0]
            } else {
                [255, 255, 255]
            }
        });
        assert!(drawn(&text));
        assert!(drawn(b"not a png"), "unreadable: kept");
    }

    #[test]
    fn pictures_go_beside_their_page() {
        assert_eq!(
            crate::site::thumb_path(Path::new("notebooks/sub/a b.html")),
            Path::new("notebooks/sub/a b.thumb.png")
        );
    }
}
