//! Memory estimates and the memory this machine has available: what `limits` checks a
//! problem's sizes against before anything is allocated.

use std::fmt;

use anyhow::Result;

use crate::error::Error;

/// Bytes a problem holds at once, by what holds them (an estimate from the sizes, a little
/// above what the backend allocates).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryEstimate {
    /// The parameters and their gradients, with the copies the backend reads back.
    pub parameters: u64,
    /// The optimizer's slots (and their read-back copies).
    pub optimizer: u64,
    /// The matrices of the solve for P = (WᵀW + rI)⁻¹Wᵀ (TP-RI only).
    pub solver: u64,
    /// The per-step histories of an iteration: states, targets, backward errors, gates.
    pub histories: u64,
    /// One training batch (and its working copy).
    pub batch: u64,
    /// The held-out evaluation set, held whole.
    pub evaluation: u64,
}

impl MemoryEstimate {
    /// The sum of the parts (saturating: an estimate that large is refused anyway).
    pub fn total(&self) -> u64 {
        [
            self.parameters,
            self.optimizer,
            self.solver,
            self.histories,
            self.batch,
            self.evaluation,
        ]
        .iter()
        .fold(0u64, |a, &b| a.saturating_add(b))
    }
}

impl fmt::Display for MemoryEstimate {
    /// `about 1.2 GiB (parameters 3.1 MiB, optimizer state …, …)`, the empty parts left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            ("parameters", self.parameters),
            ("optimizer state", self.optimizer),
            ("solver", self.solver),
            ("histories", self.histories),
            ("batch", self.batch),
            ("evaluation set", self.evaluation),
        ]
        .iter()
        .filter(|(_, b)| *b > 0)
        .map(|(what, b)| format!("{what} {}", bytes(*b)))
        .collect();
        write!(f, "about {} ({})", bytes(self.total()), parts.join(", "))
    }
}

/// `12.3 GiB`, `512 B`: a byte count for people.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The memory the kernel says can be allocated without swapping (`MemAvailable` of
/// `/proc/meminfo`), on Linux; `None` elsewhere or when it cannot be read.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

/// `MemAvailable` in bytes from the text of `/proc/meminfo`.
fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    let scale = match fields.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(scale)
}

/// Refuses `estimate` for `what` when it exceeds `available` bytes (no check when the
/// available memory is unknown), with the estimate in the message.
pub fn check_fits(what: &str, estimate: &MemoryEstimate, available: Option<u64>) -> Result<()> {
    let Some(available) = available else {
        return Ok(());
    };
    let needed = estimate.total();
    if needed > available {
        return Err(Error::DeviceLimit {
            limit: "MemAvailable".into(),
            needed: Some(needed),
            allowed: available,
            message: format!(
                "{what} needs {estimate}, more than the {} of memory available \
                 (MemAvailable); use smaller sizes",
                bytes(available)
            ),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_available() {
        let text = "MemTotal:       24000000 kB\nMemFree:  10 kB\nMemAvailable:   2000 kB\n";
        assert_eq!(parse_mem_available(text), Some(2_048_000));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: x kB\n"), None);
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let e = MemoryEstimate {
            parameters: 3 << 30,
            histories: 1 << 20,
            ..MemoryEstimate::default()
        };
        assert_eq!(bytes(e.total()), "3.0 GiB");
        assert!(check_fits("x", &e, None).is_ok());
        assert!(check_fits("x", &e, Some(4 << 30)).is_ok());
        let msg = check_fits("training", &e, Some(1 << 30))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("about 3.0 GiB (parameters 3.0 GiB, histories 1.0 MiB)"),
            "{msg}"
        );
        assert!(msg.contains("1.0 GiB of memory available"), "{msg}");
    }
}
