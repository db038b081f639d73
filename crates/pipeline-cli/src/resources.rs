//! What jobs need (`cpus = 2`, `mem = "4G * attempt"`, `gpus = 1`, `resources = { db = 1 }`)
//! and what a run has: the machine's cores and available memory, no GPUs, over them the
//! pipeline's `resources = { db = 1 }`, over those `--resources cpus=8,mem=16G,db=1`. The pool
//! admits a job only when its needs fit what the running jobs left (`fanout::Budget`). Memory
//! is counted in MiB.

use std::collections::BTreeMap;

use serde::Deserialize;

pub(crate) const CPUS: &str = "cpus";
pub(crate) const MEM: &str = "mem";
pub(crate) const GPUS: &str = "gpus";

/// Environment variables a job finds its attempt's amounts in (cpus, mem in MiB, gpus).
pub(crate) const ENV: [(&str, &str); 3] = [
    (CPUS, "LORCHESTRA_CPUS"),
    (MEM, "LORCHESTRA_MEM_MB"),
    (GPUS, "LORCHESTRA_GPUS"),
];

/// One need: an amount, multiplied by the attempt number if it `grows` (`"4G * attempt"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Amount {
    pub(crate) base: u64,
    pub(crate) grows: bool,
}

impl Amount {
    /// The amount of attempt `attempt` (1 for the first).
    pub(crate) fn at(self, attempt: u32) -> u64 {
        if self.grows {
            self.base.saturating_mul(u64::from(attempt.max(1)))
        } else {
            self.base
        }
    }
}

/// A job's needs by resource name.
pub(crate) type Needs = BTreeMap<String, Amount>;

/// A run's amounts by resource name.
pub(crate) type Amounts = BTreeMap<String, u64>;

/// An amount as written: `2`, `"4G"`, `"4G * attempt"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawAmount {
    Number(u64),
    Text(String),
}

/// `name`'s amount as written: a whole number (for `mem`, MiB, or with a unit K/M/G/T), times
/// `attempt` if it says so.
pub(crate) fn amount(name: &str, raw: &RawAmount) -> Result<Amount, String> {
    let text = match raw {
        RawAmount::Number(n) => {
            return Ok(Amount {
                base: *n,
                grows: false,
            });
        }
        RawAmount::Text(t) => t.trim(),
    };
    let (value, grows) = match text.split_once('*') {
        Some((a, b)) if b.trim() == "attempt" => (a.trim(), true),
        Some((a, b)) if a.trim() == "attempt" => (b.trim(), true),
        Some(_) => {
            return Err(format!(
                "{name} = {text:?}: the only product is `AMOUNT * attempt` (e.g. \"4G * attempt\")"
            ));
        }
        None => (text, false),
    };
    let base = quantity(name, value)?;
    Ok(Amount { base, grows })
}

/// A plain amount of `name`: memory takes a unit (K, M, G, T; binary; MiB without one), the
/// rest are whole numbers.
pub(crate) fn quantity(name: &str, text: &str) -> Result<u64, String> {
    let text = text.trim();
    let bad = || {
        if name == MEM {
            format!(
                "{name} = {text:?} is not an amount of memory (e.g. 512M, 4G, 1T; MiB without a unit)"
            )
        } else {
            format!("{name} = {text:?} is not a whole number")
        }
    };
    if name != MEM {
        return text.parse().map_err(|_| bad());
    }
    let upper = text.to_ascii_uppercase();
    // NUMBER, then at most one of K M G T, then an optional B or IB (4G, 4GB, 4GiB).
    let without_b = upper.strip_suffix("IB").or_else(|| upper.strip_suffix('B'));
    let rest = without_b.unwrap_or(&upper);
    let (digits, scale_kib): (&str, u64) = match rest.chars().last() {
        Some('K') => (&rest[..rest.len() - 1], 1),
        Some('M') => (&rest[..rest.len() - 1], 1024),
        Some('G') => (&rest[..rest.len() - 1], 1024 * 1024),
        Some('T') => (&rest[..rest.len() - 1], 1024 * 1024 * 1024),
        _ if without_b.is_some() => return Err(bad()),
        _ => (rest, 1024),
    };
    let value: f64 = digits.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a finite, non-negative number of KiB, rounded up to whole MiB"
    )]
    let mib = (value * scale_kib as f64 / 1024.0).ceil() as u64;
    Ok(mib)
}

/// `value` of `name` for people: memory as `6G`/`512M`, the rest as numbers.
pub(crate) fn show(name: &str, value: u64) -> String {
    if name != MEM {
        return value.to_string();
    }
    if value >= 1024 && value.is_multiple_of(1024) {
        format!("{}G", value / 1024)
    } else {
        format!("{value}M")
    }
}

/// A job's needs from its `cpus`, `mem`, `gpus` and `resources`; zero amounts are left out.
pub(crate) fn needs(
    cpus: Option<&RawAmount>,
    mem: Option<&RawAmount>,
    gpus: Option<&RawAmount>,
    named: &BTreeMap<String, RawAmount>,
) -> Result<Needs, String> {
    let mut needs = Needs::new();
    let builtin = [(CPUS, cpus), (MEM, mem), (GPUS, gpus)];
    for (name, raw) in builtin.into_iter().filter_map(|(n, r)| Some((n, r?))) {
        needs.insert(name.to_owned(), amount(name, raw)?);
    }
    for (name, raw) in named {
        if [CPUS, MEM, GPUS].contains(&name.as_str()) {
            return Err(format!(
                "resources.{name}: say `{name} = ...` on the job itself"
            ));
        }
        check_name(name)?;
        needs.insert(name.clone(), amount(name, raw)?);
    }
    needs.retain(|_, a| a.base > 0);
    Ok(needs)
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "{name:?} is not a resource name (letters, digits, _ and -)"
        ));
    }
    Ok(())
}

/// `--resources cpus=8,mem=16G,db=1`.
pub(crate) fn parse_flag(text: &str) -> Result<Amounts, String> {
    let mut amounts = Amounts::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = part.split_once('=') else {
            return Err(format!(
                "--resources {text}: {part:?} is not NAME=AMOUNT (e.g. cpus=8,mem=16G,db=1)"
            ));
        };
        let name = name.trim();
        check_name(name).map_err(|why| format!("--resources {text}: {why}"))?;
        let value = quantity(name, value).map_err(|why| format!("--resources {text}: {why}"))?;
        amounts.insert(name.to_owned(), value);
    }
    Ok(amounts)
}

/// The pipeline file's `resources = { db = 1 }`: the amounts of named resources it has.
pub(crate) fn from_file(raw: &BTreeMap<String, RawAmount>) -> Result<Amounts, String> {
    raw.iter()
        .map(|(name, value)| {
            check_name(name)?;
            let a = amount(name, value)?;
            if a.grows {
                return Err(format!("resources.{name}: a run's amount does not grow"));
            }
            Ok((name.clone(), a.base))
        })
        .collect()
}

/// The run's amounts: the machine's (cpus = cores, mem = available memory, gpus = 0), then
/// the pipeline's, then the command line's.
pub(crate) fn budget(file: &Amounts, flag: &Amounts) -> Amounts {
    let mut all = Amounts::new();
    all.insert(
        CPUS.to_owned(),
        std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
    );
    all.insert(MEM.to_owned(), available_memory_mib());
    all.insert(GPUS.to_owned(), 0);
    all.extend(file.iter().map(|(k, v)| (k.clone(), *v)));
    all.extend(flag.iter().map(|(k, v)| (k.clone(), *v)));
    all
}

/// The memory this machine has available now (`MemAvailable`), in MiB; without `/proc`, no
/// limit.
fn available_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kib| kib / 1024)
}

/// The names of built-in resources a job on Slurm asks Slurm for instead of the run.
pub(crate) fn is_builtin(name: &str) -> bool {
    [CPUS, MEM, GPUS].contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_units_and_attempts() {
        let t = |s: &str| RawAmount::Text(s.to_owned());
        assert_eq!(
            amount(MEM, &t("4G * attempt")),
            Ok(Amount {
                base: 4096,
                grows: true
            })
        );
        assert_eq!(amount(MEM, &t("512M")).unwrap().base, 512);
        assert_eq!(amount(MEM, &t("1.5G")).unwrap().base, 1536);
        assert_eq!(amount(MEM, &t("2GiB")).unwrap().base, 2048);
        assert_eq!(amount(MEM, &RawAmount::Number(100)).unwrap().base, 100);
        assert_eq!(amount(CPUS, &t("attempt * 2")).unwrap().at(3), 6);
        assert!(amount(CPUS, &t("2G")).is_err());
        assert!(amount(MEM, &t("4X")).is_err());
        assert!(amount(MEM, &t("4MK")).is_err());
        assert!(amount(MEM, &t("4B")).is_err());
        assert_eq!(amount(MEM, &t("4GB")).unwrap().base, 4096);
        assert!(
            amount(MEM, &t("4G * 2"))
                .unwrap_err()
                .contains("AMOUNT * attempt")
        );
        assert_eq!(show(MEM, 6144), "6G");
        assert_eq!(show(MEM, 500), "500M");
    }

    #[test]
    fn the_flag_names_what_it_sets() {
        let a = parse_flag("cpus=8, mem=16G,db=1").unwrap();
        assert_eq!(a[CPUS], 8);
        assert_eq!(a[MEM], 16 * 1024);
        assert_eq!(a["db"], 1);
        assert!(parse_flag("cpus").unwrap_err().contains("NAME=AMOUNT"));
        assert!(parse_flag("d b=1").unwrap_err().contains("resource name"));
        let b = budget(&Amounts::new(), &a);
        assert_eq!(b[GPUS], 0);
        assert_eq!(b[CPUS], 8);
    }
}
