//! The `[power]` section of `desktop.toml`: whether and how the desktop
//! sleeps between the server's requests while its VMs are consolidated.
//! Without the section the desktop never sleeps.
//!
//! ```toml
//! mac = "52:54:00:12:34:56"           # at the top: the server wakes the desktop by it
//!
//! [power]
//! policy = "fixed"                    # or "adaptive" (Eq. 4, learned from the gaps)
//! wait_secs = 6.0                     # t_w: no request this long, then sleep
//! profile = "/etc/jettison/power.json" # the desktop's power profile (default: the paper's Table 1)
//! sleep = "system"                    # logind or /sys/power/state; "emulated-s3" for tests
//! interface = "br0"                   # the NIC that must wake the desktop (default: the default route's)
//! ledger_dir = "/var/lib/jettison/power" # stays.jsonl, ledger.json, power.svg (default: state_dir/power)
//! # sleep = "emulated-s3" only: the interface's address, dropped while asleep, and the times
//! address = "10.77.0.2/24"
//! suspend_secs = 2.0
//! resume_secs = 2.0
//! ```

use std::path::{Path, PathBuf};

use identifiers::Mac;
use power::{PowerProfile, DEFAULT_WAIT_SECS};
use serde::Deserialize;

use crate::microsleep::{self, EmulatedSettings, WaitPolicy};

/// How the desktop sleeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SleepChoice {
    /// This machine's S3: logind's Suspend, else `/sys/power/state`.
    #[default]
    System,
    /// An emulated S3 for tests: the interface loses its address until a
    /// magic packet for the desktop's `mac` arrives.
    EmulatedS3,
}

/// The `[power]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerConfig {
    /// How t_w is chosen.
    #[serde(default)]
    pub policy: WaitPolicy,
    /// t_w in seconds (the adaptive policy's start).
    #[serde(default = "default_wait")]
    pub wait_secs: f64,
    /// The desktop's power profile (JSON); none: the paper's Table 1.
    #[serde(default)]
    pub profile: Option<PathBuf>,
    /// How the desktop sleeps.
    #[serde(default)]
    pub sleep: SleepChoice,
    /// system: the NIC checked to wake on a magic packet (default: the
    /// default route's); emulated-s3: the interface that loses its address.
    #[serde(default)]
    pub interface: Option<String>,
    /// Where `stays.jsonl`, `ledger.json` and `power.svg` go; none: `state_dir/power`.
    #[serde(default)]
    pub ledger_dir: Option<PathBuf>,
    /// emulated-s3: the interface's address with prefix.
    #[serde(default)]
    pub address: Option<String>,
    /// emulated-s3: seconds to fall asleep (default: the profile's).
    #[serde(default)]
    pub suspend_secs: Option<f64>,
    /// emulated-s3: seconds to wake up (default: the profile's).
    #[serde(default)]
    pub resume_secs: Option<f64>,
}

fn default_wait() -> f64 {
    DEFAULT_WAIT_SECS
}

impl PowerConfig {
    /// Checks every key against the rest of the file (`mac`, the
    /// desktop's own): the error names the key and what to write instead.
    ///
    /// # Errors
    /// The reason, as the configuration loader reports it.
    pub fn check(&self, mac: Option<Mac>) -> Result<(), String> {
        let mac = mac.ok_or(
            "[power] makes the desktop sleep, and the server wakes it by its MAC: add mac = \"...\" (this \
             desktop's NIC) at the top of the file, or remove [power]",
        )?;
        let profile = self.profile()?;
        self.policy
            .build(profile, self.wait_secs)
            .map_err(|_| format!("[power] wait_secs = {}: write the seconds to wait, 0 or more", self.wait_secs))?;
        match self.sleep {
            SleepChoice::System => {
                for (key, given) in [
                    ("address", self.address.is_some()),
                    ("suspend_secs", self.suspend_secs.is_some()),
                    ("resume_secs", self.resume_secs.is_some()),
                ] {
                    if given {
                        return Err(format!(
                            "[power] {key} only applies to sleep = \"emulated-s3\": remove it (a real \
                             suspend takes the time it takes)"
                        ));
                    }
                }
            }
            SleepChoice::EmulatedS3 => {
                self.emulated(mac, &profile).map_err(|e| format!("[power] {e}"))?;
            }
        }
        Ok(())
    }

    /// The power profile: the file's, else the paper's Table 1.
    ///
    /// # Errors
    /// The file cannot be read or is not a profile, with its path.
    pub fn profile(&self) -> Result<PowerProfile, String> {
        match &self.profile {
            Some(path) => PowerProfile::load(path).map_err(|e| {
                format!("[power] profile = {:?}: {} (write the path of a JSON power profile, or remove the key for Table 1)", path.display(), wire::chain(&e))
            }),
            None => Ok(PowerProfile::TABLE_1),
        }
    }

    /// The ledger's directory, `state_dir/power` unless set.
    pub fn ledger_dir(&self, state_dir: &Path) -> PathBuf {
        self.ledger_dir.clone().unwrap_or_else(|| state_dir.join("power"))
    }

    /// The emulated S3's settings, for `mac` (no daemons to stop: memserv
    /// and diskserv are threads of the desktop daemon).
    ///
    /// # Errors
    /// A key missing or wrong, named.
    pub fn emulated(&self, mac: Mac, profile: &PowerProfile) -> Result<EmulatedSettings, String> {
        let interface = self.interface.clone().ok_or(
            "sleep = \"emulated-s3\" needs interface = \"...\": the interface that loses its address while asleep",
        )?;
        let address = self.address.clone().ok_or(
            "sleep = \"emulated-s3\" needs address = \"...\": that interface's address with prefix, e.g. \"10.77.0.2/24\"",
        )?;
        microsleep::check_address(&address).map_err(|e| e.to_string())?;
        let settings = EmulatedSettings {
            interface,
            address,
            mac,
            pids: Vec::new(),
            suspend_secs: self.suspend_secs.unwrap_or(profile.suspend_secs),
            resume_secs: self.resume_secs.unwrap_or(profile.resume_secs),
        };
        microsleep::duration("suspend_secs", settings.suspend_secs).map_err(|e| e.to_string())?;
        microsleep::duration("resume_secs", settings.resume_secs).map_err(|e| e.to_string())?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> PowerConfig {
        toml::from_str(text).expect("a [power] section")
    }

    const MAC: Option<Mac> = Some(Mac([0x02, 0x4a, 0x57, 0, 0, 2]));

    #[test]
    fn an_empty_section_is_the_papers_defaults() {
        let power = parse("");
        assert_eq!(power.policy, WaitPolicy::Fixed);
        assert_eq!(power.wait_secs, DEFAULT_WAIT_SECS);
        assert_eq!(power.sleep, SleepChoice::System);
        assert_eq!(power.ledger_dir(Path::new("/var/lib/jettison")), Path::new("/var/lib/jettison/power"));
        power.check(MAC).expect("the defaults are valid");
    }

    #[test]
    fn each_mistake_is_named_with_what_to_write() {
        let cases = [
            ("", None, "add mac = "),
            ("wait_secs = -1.0", MAC, "wait_secs = -1"),
            ("address = \"10.0.0.2/24\"", MAC, "address only applies to sleep = \"emulated-s3\""),
            ("sleep = \"emulated-s3\"\naddress = \"10.0.0.2/24\"", MAC, "needs interface"),
            ("sleep = \"emulated-s3\"\ninterface = \"br0\"", MAC, "needs address"),
            ("sleep = \"emulated-s3\"\ninterface = \"br0\"\naddress = \"10.0.0.2\"", MAC, "with its prefix"),
            (
                "sleep = \"emulated-s3\"\ninterface = \"br0\"\naddress = \"10.0.0.2/24\"\nsuspend_secs = -2.0",
                MAC,
                "suspend_secs = -2",
            ),
            ("profile = \"/nonexistent/power.json\"", MAC, "profile = \"/nonexistent/power.json\""),
        ];
        for (text, mac, expected) in cases {
            let error = parse(text).check(mac).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
        assert!(toml::from_str::<PowerConfig>("sleep = \"hibernate\"").is_err());
        assert!(toml::from_str::<PowerConfig>("policy = \"eager\"").is_err());
    }

    #[test]
    fn emulated_s3_takes_the_desktops_mac_and_stops_no_process() {
        let power =
            parse("sleep = \"emulated-s3\"\ninterface = \"br0\"\naddress = \"10.0.0.2/24\"\nsuspend_secs = 1.5");
        power.check(MAC).expect("valid");
        let settings = power.emulated(MAC.unwrap(), &PowerProfile::TABLE_1).expect("valid");
        assert_eq!(settings.mac, MAC.unwrap());
        assert!(settings.pids.is_empty());
        assert_eq!(settings.suspend_secs, 1.5);
        assert_eq!(settings.resume_secs, PowerProfile::TABLE_1.resume_secs);
    }
}
