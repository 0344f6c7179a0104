//! A link between network namespaces capped with `tc`, as benchmarks that
//! move VMs over "the same link" need it: a token bucket on a device's
//! egress (a cap on both ends of a veth caps both directions), and the
//! device's byte counters, which count what crossed it, headers included.

use std::process::Command;

/// Caps what device `dev` of namespace `ns` sends at `mbit` Mbit/s: a token
/// bucket filter (`tc tbf`) with a burst of 1 ms at the rate, at least
/// 64 KiB (one veth GSO packet), and 50 ms of queue.
///
/// # Errors
/// `tc`'s own words, or that it does not run (`apt-get install iproute2`).
pub fn cap_egress(ns: &str, dev: &str, mbit: u64) -> Result<(), String> {
    let burst_bytes = (mbit * 1000 / 8).max(64 << 10);
    let out = Command::new("tc")
        .args(["-n", ns, "qdisc", "add", "dev", dev, "root", "tbf"])
        .args(["rate", &format!("{mbit}mbit"), "burst", &burst_bytes.to_string(), "latency", "50ms"])
        .output()
        .map_err(|e| format!("tc does not run ({e}): apt-get install iproute2"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!("tc cannot cap {dev} in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim())),
    }
}

/// Bytes device `dev` of namespace `ns` has received and sent so far, from
/// `ip -s -j link`.
///
/// # Errors
/// What `ip` said, or that its answer had no counters.
pub fn device_bytes(ns: &str, dev: &str) -> Result<u64, String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-s", "-j", "link", "show", "dev", dev])
        .output()
        .map_err(|e| format!("ip does not run ({e}): apt-get install iproute2"))?;
    if !out.status.success() {
        return Err(format!("ip -s link of {dev} in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let links: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("ip -s -j link of {dev} in {ns}: {e}"))?;
    let counter = |way: &str| links[0]["stats64"][way]["bytes"].as_u64();
    counter("rx")
        .zip(counter("tx"))
        .map(|(rx, tx)| rx + tx)
        .ok_or_else(|| format!("no byte counters for {dev} in {ns} in `ip -s -j link`"))
}
