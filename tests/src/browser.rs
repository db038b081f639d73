//! Pages we generate, opened in a real headless Chromium through its DevTools protocol
//! (the `headless_chrome` crate), for export-nb's index and lorchestra's timeline.
//!
//! A [`Page`] records what a user would not see but must not happen: console errors, uncaught
//! exceptions, failed loads, and any request that leaves the machine (anything but `file:`,
//! `data:` and `about:`). It evaluates JavaScript to inspect the rendered DOM, runs the
//! accessibility checks shared by both pages, and takes full-page screenshots.
//!
//! Chromium is launched with the flags these machines need (the network is closed, so
//! background connections would fail noisily) and a fresh profile folder per browser.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::protocol::cdp::{Emulation, Network, Page as Cdp};
use headless_chrome::{Browser as Chrome, LaunchOptions, Tab};
use serde::de::DeserializeOwned;

/// The Chromium flags the issue asks for, beyond headless and the profile folder.
const FLAGS: [&str; 6] = [
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-default-browser-check",
];

/// The Chromium binary: `$CHROMIUM`, else `chromium` or `chromium-browser` on `PATH`.
///
/// # Panics
/// When there is none: these tests never pass by skipping. `.ci/run` installs Debian's
/// `chromium`; elsewhere, `apt-get install chromium`.
pub fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| crate::which(name))
        .expect(
            "no Chromium found: install Debian's `chromium` package (apt-get install chromium) \
             or set CHROMIUM to a Chrome/Chromium binary",
        )
}

/// One headless Chromium with its own profile folder; it is closed when dropped.
pub struct Browser {
    chrome: Chrome,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Browser(headless Chromium)")
    }
}

impl Browser {
    /// # Panics
    /// When Chromium cannot be found or started; the message says why.
    pub fn launch() -> Self {
        let profile = tempfile::tempdir().expect("a profile folder");
        let args: Vec<&std::ffi::OsStr> = FLAGS.iter().map(std::ffi::OsStr::new).collect();
        let options = LaunchOptions::default_builder()
            .path(Some(chromium()))
            .headless(true)
            .sandbox(false)
            .user_data_dir(Some(profile.path().to_path_buf()))
            .args(args)
            .idle_browser_timeout(Duration::from_secs(120))
            .build()
            .expect("Chromium launch options");
        let chrome = Chrome::new(options)
            .unwrap_or_else(|e| panic!("could not start {}: {e:#}", chromium().display()));
        Browser {
            chrome,
            _profile: profile,
        }
    }

    /// Open `file` in a new tab with a viewport `width` CSS pixels wide, and wait until it has
    /// loaded.
    ///
    /// # Panics
    /// When the tab cannot be opened or the page does not load.
    pub fn open(&self, file: &Path, width: u32) -> Page {
        let file = file.canonicalize().expect("the page exists");
        self.open_url(&format!("file://{}", file.display()), width)
    }

    /// Open `url` (a page served on 127.0.0.1, say) like [`Browser::open`].
    ///
    /// # Panics
    /// When the tab cannot be opened or the page does not load.
    pub fn open_url(&self, url: &str, width: u32) -> Page {
        let tab = self.chrome.new_tab().expect("a new tab");
        // headless_chrome waits 20 s for an event by default; a real marimo page (megabytes of
        // JavaScript) on a loaded two-core machine once took longer to fire `load`.
        tab.set_default_timeout(Duration::from_secs(90));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = Arc::clone(&seen);
        tab.add_event_listener(Arc::new(move |event: &Event| {
            record.lock().expect("page events").add(event);
        }))
        .expect("listen to the page");
        tab.enable_log().expect("Log domain");
        tab.enable_runtime().expect("Runtime domain");
        tab.call_method(Network::Enable {
            max_total_buffer_size: None,
            max_resource_buffer_size: None,
            max_post_data_size: None,
            report_direct_socket_traffic: None,
            enable_durable_messages: None,
        })
        .expect("Network domain");
        let page = Page { tab, seen, width };
        page.set_viewport(width, 900);
        page.tab
            .navigate_to(url)
            .and_then(|t| t.wait_until_navigated())
            .unwrap_or_else(|e| panic!("{url} did not load: {e:#}"));
        page
    }
}

/// What the page did that the user does not see.
#[derive(Debug, Default)]
struct Seen {
    console_errors: Vec<String>,
    requests: Vec<String>,
}

impl Seen {
    fn add(&mut self, event: &Event) {
        match event {
            Event::RuntimeConsoleAPICalled(e) => {
                use headless_chrome::protocol::cdp::Runtime::ConsoleAPICalledEventTypeOption as Kind;
                if matches!(e.params.Type, Kind::Error | Kind::Assert | Kind::Warning) {
                    let text: Vec<String> = e
                        .params
                        .args
                        .iter()
                        .map(|a| {
                            a.value.as_ref().map_or_else(
                                || a.description.clone().unwrap_or_default(),
                                ToString::to_string,
                            )
                        })
                        .collect();
                    self.console_errors.push(format!(
                        "console.{:?}: {}",
                        e.params.Type,
                        text.join(" ")
                    ));
                }
            }
            Event::RuntimeExceptionThrown(e) => {
                self.console_errors.push(format!(
                    "uncaught exception: {}",
                    e.params.exception_details.text
                ));
            }
            Event::LogEntryAdded(e) => {
                use headless_chrome::protocol::cdp::Log::LogEntryLevel as Level;
                if matches!(e.params.entry.level, Level::Error | Level::Warning) {
                    self.console_errors.push(format!(
                        "log {:?}: {} {}",
                        e.params.entry.level,
                        e.params.entry.text,
                        e.params.entry.url.clone().unwrap_or_default()
                    ));
                }
            }
            Event::NetworkRequestWillBeSent(e) => {
                self.requests.push(e.params.request.url.clone());
            }
            _ => {}
        }
    }
}

/// An open page.
pub struct Page {
    tab: Arc<Tab>,
    seen: Arc<Mutex<Seen>>,
    width: u32,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Page({}, {} px wide)", self.tab.get_url(), self.width)
    }
}

impl Page {
    fn set_viewport(&self, width: u32, height: u32) {
        self.tab
            .call_method(Emulation::SetDeviceMetricsOverride {
                width,
                height,
                device_scale_factor: 1.0,
                mobile: width < 600,
                scale: None,
                screen_width: None,
                screen_height: None,
                position_x: None,
                position_y: None,
                dont_set_visible_size: None,
                screen_orientation: None,
                viewport: None,
                display_feature: None,
                device_posture: None,
            })
            .expect("set the viewport");
    }

    /// The value of a JavaScript expression, through JSON.
    ///
    /// # Panics
    /// When the expression throws or its value does not deserialize into `T`.
    pub fn eval<T: DeserializeOwned>(&self, expression: &str) -> T {
        let wrapped = format!("JSON.stringify((() => {{ return {expression}; }})())");
        let result = self
            .tab
            .evaluate(&wrapped, false)
            .unwrap_or_else(|e| panic!("evaluating `{expression}`: {e:#}"));
        let json = result
            .value
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("`{expression}` gave no value: {:?}", result.description));
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("`{expression}` = {json}: {e}"))
    }

    /// Click the element `selector` names, as a user does: the mouse moves to it and presses.
    ///
    /// # Panics
    /// When no element matches, or the click cannot be sent.
    pub fn click(&self, selector: &str) {
        self.tab
            .find_element(selector)
            .and_then(|e| e.click().map(|_| ()))
            .unwrap_or_else(|e| panic!("clicking {selector}: {e:#}"));
    }

    /// Focus the element `selector` names (clicking it) and type `text` key by key.
    ///
    /// # Panics
    /// When no element matches, or the keys cannot be sent.
    pub fn type_into(&self, selector: &str, text: &str) {
        self.click(selector);
        self.tab
            .type_str(text)
            .unwrap_or_else(|e| panic!("typing into {selector}: {e:#}"));
    }

    /// Press one key (`Backspace`, `Escape`...) where the focus is.
    ///
    /// # Panics
    /// When the key cannot be sent.
    pub fn press(&self, key: &str) {
        self.tab
            .press_key(key)
            .unwrap_or_else(|e| panic!("pressing {key}: {e:#}"));
    }

    /// Wait up to `limit` for a JavaScript expression to be true (a page that renders after it
    /// has loaded, or reloads itself, say); whether it became true.
    pub fn wait_until(&self, expression: &str, limit: Duration) -> bool {
        let start = std::time::Instant::now();
        let wrapped = format!("Boolean({expression})");
        loop {
            // While the page reloads, evaluating may fail: that is "not yet".
            let value = self
                .tab
                .evaluate(&wrapped, false)
                .ok()
                .and_then(|r| r.value);
            if value.and_then(|v| v.as_bool()) == Some(true) {
                return true;
            }
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every request the page made so far.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().expect("page events").requests.clone()
    }

    /// Console errors and warnings, uncaught exceptions and failed loads so far.
    pub fn console_errors(&self) -> Vec<String> {
        self.seen
            .lock()
            .expect("page events")
            .console_errors
            .clone()
    }

    /// Requests for anything but `file:`, `data:`, `blob:` and `about:` URLs and servers on
    /// 127.0.0.1: the page is meant to be self-contained.
    pub fn requests_leaving_the_machine(&self) -> Vec<String> {
        self.seen
            .lock()
            .expect("page events")
            .requests
            .iter()
            .filter(|u| {
                !["file:", "data:", "blob:", "about:", "http://127.0.0.1:"]
                    .iter()
                    .any(|s| u.starts_with(s))
            })
            .cloned()
            .collect()
    }

    /// The page's width when its content is wider than the viewport (it scrolls sideways as a
    /// whole, which a phone user should not have to do), else `None`.
    pub fn horizontal_overflow(&self) -> Option<u32> {
        let scroll: u32 = self.eval("document.documentElement.scrollWidth");
        (scroll > self.width).then_some(scroll)
    }

    /// Write a PNG of the whole page (not just the viewport) to `path`.
    ///
    /// # Panics
    /// When the screenshot cannot be taken or written.
    pub fn screenshot(&self, path: &Path) {
        let height: u32 = self.eval("Math.ceil(document.documentElement.scrollHeight)");
        self.set_viewport(self.width, height.clamp(200, 8000));
        let png = self
            .tab
            .capture_screenshot(Cdp::CaptureScreenshotFormatOption::Png, None, None, true)
            .expect("a screenshot");
        self.set_viewport(self.width, 900);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the screenshot folder");
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// What every generated page must satisfy, at any width: no console error, no request
    /// leaving the machine, no accessibility problem, no sideways scrolling of the whole page.
    ///
    /// # Panics
    /// On the first of these that fails, naming the width and what was found.
    pub fn assert_sound(&self) {
        let width = self.width;
        assert_eq!(
            self.console_errors(),
            Vec::<String>::new(),
            "console errors at {width} px"
        );
        assert_eq!(
            self.requests_leaving_the_machine(),
            Vec::<String>::new(),
            "the page is not self-contained"
        );
        assert_eq!(
            self.accessibility_problems(),
            Vec::<String>::new(),
            "accessibility at {width} px"
        );
        assert_eq!(
            self.horizontal_overflow(),
            None,
            "the whole page scrolls sideways at {width} px"
        );
    }

    /// Basic accessibility problems, each described; empty when there are none: a page title;
    /// one `h1`, and no heading level skipped; every link with text; text contrast of at least
    /// 4.5:1 (WCAG AA) against the background it is drawn on.
    pub fn accessibility_problems(&self) -> Vec<String> {
        self.eval(ACCESSIBILITY_JS)
    }
}

/// The checks behind [`Page::accessibility_problems`], run in the page.
const ACCESSIBILITY_JS: &str = r"(() => {
  const problems = [];
  if (!document.title.trim()) problems.push('the page has no title');
  if (!document.documentElement.lang) problems.push('<html> has no lang');
  const headings = [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')];
  const h1s = headings.filter(h => h.tagName === 'H1').length;
  if (h1s !== 1) problems.push(`${h1s} h1 elements, expected one`);
  let level = 0;
  for (const h of headings) {
    const l = Number(h.tagName[1]);
    if (l > level + 1) problems.push(`heading '${h.textContent.trim()}' is h${l} after h${level}`);
    level = l;
  }
  for (const a of document.querySelectorAll('a')) {
    if (!a.textContent.trim() && !a.getAttribute('aria-label')) problems.push(`a link to ${a.href} has no text`);
  }
  const rgb = s => (s.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const background = el => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const seen = new Set();
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest('svg')) continue;
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.offsetParent === null && getComputedStyle(el).position !== 'fixed') continue;
    const fg = rgb(getComputedStyle(el).color).slice(0, 3);
    const bg = background(el);
    const [hi, lo] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const key = `${fg}|${bg}`;
    if (ratio < 4.5 && !seen.has(key)) {
      seen.add(key);
      problems.push(`contrast ${ratio.toFixed(2)}:1 for '${el.textContent.trim().slice(0, 40)}' (rgb ${fg} on rgb ${bg})`);
    }
  }
  return problems;
})()";

/// Where a test's screenshots go: `$FANOUT_SCREENSHOTS` when set (`cargo xtask screenshots`
/// points it at `docs/screenshots`), else `target/screenshots/<test>`.
pub fn screenshot_dir(test: &str) -> PathBuf {
    std::env::var_os("FANOUT_SCREENSHOTS").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/screenshots")
                .join(test)
        },
        PathBuf::from,
    )
}

#[cfg(all(test, feature = "browser-tests"))]
mod tests {
    use super::*;

    /// The checks find what they are meant to find: a page with every fault.
    #[test]
    fn the_checks_catch_a_page_with_every_fault() {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("bad.html");
        std::fs::write(
            &page,
            r#"<!DOCTYPE html><html><head><title> </title></head><body>
            <h1>One</h1><h3>Skipped a level</h3>
            <p style="color:#bbb;background:#fff">faint text</p>
            <a href="x.html"></a>
            <img src="http://example.invalid/pixel.png" alt="">
            <div style="width:2000px">wide</div>
            <script>console.error("something broke")</script>
            </body></html>"#,
        )
        .unwrap();
        let browser = Browser::launch();
        let page = browser.open(&page, 390);
        let problems = page.accessibility_problems().join("\n");
        for expected in [
            "the page has no title",
            "<html> has no lang",
            "is h3 after h1",
            "has no text",
            "for 'faint text'",
        ] {
            assert!(
                problems.contains(expected),
                "missing {expected:?} in:\n{problems}"
            );
        }
        assert!(page.horizontal_overflow().is_some_and(|w| w >= 2000));
        assert_eq!(
            page.requests_leaving_the_machine(),
            ["http://example.invalid/pixel.png"]
        );
        assert!(
            page.console_errors()
                .iter()
                .any(|e| e.contains("something broke")),
            "{:?}",
            page.console_errors()
        );
    }
}
