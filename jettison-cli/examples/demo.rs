//! The whole job on one machine, as `./scripts/demo` runs it: an office of
//! three network namespaces (desktop, server, client on one LAN), the real
//! `jettison desktop` and `jettison server` daemons, a headless X server
//! (Xvfb) as the desk's display, and a TCG guest that boots from its own
//! qcow2 disk through SeaBIOS, paints its screen, fills part of its RAM (a
//! used desktop), counts, writes its disk and serves a client a line a
//! second.
//!
//! The loop is the desktop daemon's own (`[activity]` and `[power]` in its
//! `desktop.toml`): the user (pointer moves through XTEST) stops working,
//! the daemon sees the X server's idle time pass its limit, shows its
//! warning window on the display, moves the VM to the server when the
//! warning runs out, and falls asleep (an emulated S3: its address gone, a
//! raw socket waiting for a magic packet). The guest then reads memory it
//! had left alone, so the server wakes the desktop with Wake-on-LAN for the
//! pages; the desktop sleeps again. The user moves the pointer: the daemon
//! brings the VM home. The demo prints what moved, the sleeps, wakes, time
//! asleep and energy saved, and writes the power timeline of desktop and
//! server (like the paper's Figure 8) as SVG (and PNG where `rsvg-convert`
//! is installed) beside the server's screenshot in `target/<profile>/demo/`.
//!
//! With `--desktop-guest` the VM is the Debian desktop of
//! `scripts/desktop-guest-image` instead (2 GiB, two vCPUs: Xfce logged in
//! on its screen, Firefox ESR on local pages, an always-on client that dials
//! the office's client host): the guest faults on its own while it idles on
//! the server, reads a file it had left alone through its guest agent, and
//! writes one there; the screen checks look for its session. About 6
//! minutes under TCG, most of it the boot and the guest calming down.
//!
//! Usage: `demo [--desktop-guest]` (root; uses this build's `jettison`).
#![allow(clippy::expect_used, clippy::unwrap_used)] // a demo: a failed step ends it with the reason

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use activity_monitor::WARNING_TITLE;
use power::svg::{power_timeline, Timeline, TimelinePanel, TimelineSpan};
use power::PowerProfile;
use tests::desktop_guest::{agent, wait_for_session_on_screen, SESSION_TIMEOUT};
use tests::office::LineClient;
use tests::office::{
    assert_continuous, last_count, wait_for_count_above, BootDisk, Office, OfficeSpec, DESKTOP_LAN, VM,
};
use tests::screen::Screenshot;
use tests::xvfb::{User, Xvfb};
use tests::{BOOT_TIMEOUT, COUNT_TIMEOUT};

const PACE: Duration = Duration::from_secs(1);
const REPLY: Duration = Duration::from_secs(120);
/// Bound on a step of the loop that should come within seconds (a freshly
/// booted TCG guest may be too busy to move for a while: the daemon tries
/// again after each idle period, backing off).
const WAIT: Duration = Duration::from_secs(300);
/// `[activity]`: seconds without input before the warning, and the warning's.
const IDLE_SECS: u64 = 10;
const WARN_SECS: u64 = 5;
/// `[power]`: t_w, and the emulated S3's suspend and resume times.
const WAIT_SECS: f64 = 2.0;
const SUSPEND_SECS: f64 = 1.0;
const RESUME_SECS: f64 = 1.0;
/// How long the user stays away once the desktop sleeps again, so that the
/// timeline shows the desktop's rhythm of sleeps and wakes with the VM away.
const ASLEEP: Duration = Duration::from_secs(30);
/// How often the demo asks the desktop daemon for its state, for the timeline.
const SAMPLE: Duration = Duration::from_millis(250);
/// The paper's consolidation server (a Sun Fire X2250), idle: this server
/// has no power profile of its own.
const SERVER_WATTS: f64 = 150.70;
/// VMs the paper's server holds (its share of the server per VM).
const SERVER_VMS: f64 = 98.0;

/// The demo's guest: the small test guest, or the Debian desktop.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Guest {
    /// `scripts/guest-image`: boots from a qcow2 disk through SeaBIOS,
    /// paints a test pattern, fills 64 MiB, counts, answers a client.
    Small,
    /// `scripts/desktop-guest-image`: Xfce, Firefox, an always-on client.
    Desktop,
}

/// The desktop guest's always-on client sends a line this often.
const DESKTOP_PACE: Duration = Duration::from_secs(5);
/// Bound on the desktop guest's steps that wait on it calming down under
/// TCG (the warning comes only once the idleness check lets it move).
const DESKTOP_WAIT: Duration = Duration::from_secs(20 * 60);
/// What the guest writes in a file on the server.
const ON_SERVER_TEXT: &str = "written-on-server";

impl Guest {
    /// The office for this guest, with the demo's `[power]` and `[activity]`.
    fn spec(self, power: String, activity: String) -> OfficeSpec {
        // Asleep, the desktop reaches no server: its failover must wait long.
        let loop_spec =
            OfficeSpec { power: Some(power), activity: Some(activity), failover_secs: 600, ..OfficeSpec::default() };
        match self {
            Guest::Small => OfficeSpec { boot_disk: Some(BootDisk { firmware: "bios", format: "qcow2" }), ..loop_spec },
            Guest::Desktop => OfficeSpec { memory_mib: 2048, vcpus: 2, desktop_guest: true, ..loop_spec },
        }
    }

    /// Bound on the steps of the loop that wait on the guest.
    fn wait(self) -> Duration {
        match self {
            Guest::Small => WAIT,
            Guest::Desktop => DESKTOP_WAIT,
        }
    }

    /// Waits for the guest to be up on the desktop and returns the client
    /// talking to it.
    fn boot(self, office: &Office, dir: &Path) -> LineClient {
        match self {
            Guest::Small => {
                wait_for_count_above(&office.desktop_serial(), 0, BOOT_TIMEOUT);
                let client = office.connect_client(PACE);
                client.wait_for(3, REPLY);
                client
            }
            Guest::Desktop => {
                let client = office.accept_client(DESKTOP_PACE, SESSION_TIMEOUT);
                client.wait_for(2, REPLY);
                wait_for_session_on_screen(office, &office.desktop_socket(), "on the desktop", dir, SESSION_TIMEOUT);
                client
            }
        }
    }

    /// Has the guest on the server read memory and disk it had left alone,
    /// so that the server must wake the desktop.
    fn read_what_it_left(self, office: &Office, client: &LineClient) {
        match self {
            Guest::Small => {
                let read = client.command("readall", REPLY);
                assert!(read.starts_with("readall "), "demo: readall answered {read:?}");
            }
            Guest::Desktop => {
                let mut guest = agent(&office.server_agent_socket(), office);
                guest
                    .run("sh", &["-c", "cat /usr/lib/firefox-esr/libxul.so >/dev/null"])
                    .unwrap_or_else(|e| panic!("demo: the guest cannot read Firefox's library on the server: {e}"));
            }
        }
    }

    /// Has the guest on the server write a file; returns what to find in it.
    fn write_on_server(self, office: &Office, client: &LineClient) -> String {
        match self {
            Guest::Small => client.command(&format!("save {ON_SERVER_TEXT}"), REPLY),
            Guest::Desktop => {
                let mut guest = agent(&office.server_agent_socket(), office);
                let script = format!("echo {ON_SERVER_TEXT} > /home/jt/{ON_SERVER_TEXT}.txt && sync");
                guest
                    .run("sh", &["-c", &script])
                    .unwrap_or_else(|e| panic!("demo: the guest cannot write a file on the server: {e}"));
                ON_SERVER_TEXT.to_owned()
            }
        }
    }

    /// Whether the file written on the server (`saved`: what
    /// [`write_on_server`](Self::write_on_server) returned) is there at home.
    fn file_back(self, office: &Office, client: &LineClient, saved: &str) -> bool {
        match self {
            Guest::Small => {
                let cat = client.command(&format!("cat {ON_SERVER_TEXT}"), REPLY);
                saved.split(' ').nth(1).is_some_and(|n| cat.ends_with(&format!(" {n}")))
            }
            Guest::Desktop => {
                let mut guest = agent(&office.desktop_agent_socket(), office);
                guest.run("cat", &[&format!("/home/jt/{ON_SERVER_TEXT}.txt")]).is_ok_and(|text| text.trim() == saved)
            }
        }
    }

    /// Whether the screenshot on the server shows what the desk showed, and
    /// how to say it.
    fn screen_kept(self, screen: &Screenshot) -> (bool, &'static str) {
        match self {
            Guest::Small if screen.shows_test_pattern() => (true, "the guest's test pattern, as on the desk"),
            Guest::Small => (false, "NOT the guest's pattern"),
            Guest::Desktop if screen.shows_desktop_session() => (true, "the Xfce session with Firefox, as on the desk"),
            Guest::Desktop => (false, "NOT the guest's session"),
        }
    }

    /// The report's line on what the guest is.
    fn describe(self, spec: &OfficeSpec) -> String {
        match self {
            Guest::Small => format!("{} MiB ({} MiB of it filled with data)", spec.memory_mib, spec.fill_mib),
            Guest::Desktop => format!(
                "{} MiB, {} vCPUs: Debian with Xfce, Firefox ESR and an always-on client",
                spec.memory_mib, spec.vcpus
            ),
        }
    }
}

fn main() -> ExitCode {
    let guest = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => Guest::Small,
        [flag] if flag == "--desktop-guest" => Guest::Desktop,
        other => {
            eprintln!("demo: unknown arguments {other:?}; usage: demo [--desktop-guest]");
            return ExitCode::FAILURE;
        }
    };
    let xvfb = match Xvfb::start() {
        Ok(xvfb) => xvfb,
        Err(why) => {
            eprintln!("demo: cannot run here: {why}");
            return ExitCode::FAILURE;
        }
    };
    let windows = xvfb.watch_windows();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (interface, address) = DESKTOP_LAN;
    let power = format!(
        "sleep = \"emulated-s3\"\nwait_secs = {WAIT_SECS:?}\ninterface = \"{interface}\"\naddress = \"{address}\"\n\
         suspend_secs = {SUSPEND_SECS:?}\nresume_secs = {RESUME_SECS:?}"
    );
    let activity =
        format!("source = \"x11\"\ndisplay = \"{}\"\nidle_secs = {IDLE_SECS}\nwarn_secs = {WARN_SECS}", xvfb.display);
    let spec = guest.spec(power, activity);
    // Beside the build: target/<profile>/demo/.
    let exe = std::env::current_exe().expect("the demo's own path");
    let shots =
        exe.parent().and_then(|examples| examples.parent()).expect("target/<profile>/examples/demo").join("demo");
    std::fs::create_dir_all(&shots).expect("target/demo can be made");
    let mut office = match Office::build(dir.path(), &spec) {
        Ok(office) => office,
        Err(why) => {
            eprintln!("demo: cannot run here: {why}");
            return ExitCode::FAILURE;
        }
    };
    let socket = office.desktop_socket();
    let socket = socket.to_str().expect("a UTF-8 path").to_owned();
    println!(
        "demo: starting jettison server and jettison desktop in their namespaces; the desktop boots {VM} from its \
         qcow2 disk and watches the user on X display {} (Xvfb)",
        xvfb.display
    );
    // The user works while the desktop boots: a TCG guest starved of CPU
    // could pass for idle and move before it counts.
    let user = User::arrives(&xvfb);
    office.start_server();
    office.start_desktop();
    let watch = Watch::start(&socket);
    let client = guest.boot(&office, dir.path());

    println!(
        "demo: {VM} runs on the desktop and answers the client; the user stops working (no input for {IDLE_SECS} s \
         means idle)"
    );
    drop(user);
    let warning = windows.wait_for_mapped(WARNING_TITLE, guest.wait(), "no warning on the idle user's display");
    let warned_at = watch.now();
    println!("demo: the daemon's warning is on the user's screen (window {warning:#x}, {WARN_SECS} s to cancel)");
    let away = wait_for_status(&office, &socket, guest.wait(), "the idle user's VM never moved", |s| {
        s["vms"][0]["location"] == "server" && s["activity"]["state"] == "away"
    });
    assert_eq!(away["activity"]["moved"], serde_json::json!([VM]), "{away}");
    windows.wait_for_gone(warning, guest.wait(), "the warning stayed after the move");
    let at_consolidation = last_count(&office.desktop_serial()).unwrap_or(0);
    println!(
        "demo: the daemon moved {VM} to the server by itself; the desktop will sleep when the server needs nothing"
    );
    wait_for_count_above(&office.server_serial(), at_consolidation, COUNT_TIMEOUT);
    let server_socket = office.server_socket();
    let server_socket = server_socket.to_str().expect("a UTF-8 path");
    if guest == Guest::Desktop {
        wait_for_session_on_screen(&office, &office.server_socket(), "on the server", dir.path(), guest.wait());
    }
    let png = shots.join("screen-on-server.png");
    let ppm = shots.join("screen-on-server.ppm");
    for file in [&png, &ppm] {
        let out = office.jettison(&["screenshot", VM, file.to_str().expect("a UTF-8 path"), "--socket", server_socket]);
        assert!(out.status.success(), "demo: screenshot on the server: {}", String::from_utf8_lossy(&out.stderr));
    }
    let screen = Screenshot::read_ppm(&ppm).expect("QEMU wrote a PPM");
    std::fs::remove_file(&ppm).expect("the PPM can be removed");

    wait_for_status(&office, &socket, guest.wait(), "the desktop never fell asleep", |s| {
        s["sleep"]["sleeps"].as_u64() >= Some(1)
    });
    println!("demo: the desktop sleeps (emulated S3); the guest now reads the memory it had left alone");
    guest.read_what_it_left(&office, &client);
    wait_for_status(&office, &socket, guest.wait(), "the server never woke the desktop", |s| {
        s["sleep"]["wakes"].as_u64() >= Some(1)
    });
    println!(
        "demo: the server woke the desktop with Wake-on-LAN for those pages; the guest saves a file on the server"
    );
    let saved = guest.write_on_server(&office, &client);
    wait_for_status(&office, &socket, guest.wait(), "the desktop never slept again after a wake", |s| {
        s["sleep"]["sleeps"].as_u64() >= Some(2) && s["sleep"]["state"] == "asleep"
    });
    println!("demo: the desktop sleeps again; the user stays away {} s more", ASLEEP.as_secs());
    let quiet_from = fetch_trace::boottime_ns();
    std::thread::sleep(ASLEEP);
    let quiet_until = fetch_trace::boottime_ns();
    // Asleep, the desktop reaches no server: the server's own status has the figures.
    // A VM the server cannot read at once (busy with a move) reports as
    // "moving", without figures: asked again until it answers as running.
    let deadline = Instant::now() + guest.wait();
    let hosting = loop {
        let hosting = office.jettison_json(&["status", "--daemon", server_socket]);
        if hosting["vms"][0]["on_server"]["state"] == "running" {
            break hosting;
        }
        assert!(Instant::now() < deadline, "demo: the server does not report the VM it hosts as running: {hosting}");
        std::thread::sleep(SAMPLE);
    };
    let server = &hosting["vms"][0]["on_server"];
    let figure = |path: &[&str]| path.iter().fold(server, |v, key| &v[*key]).as_u64().unwrap_or(0);
    let (pages, blocks, zero_pages) =
        (figure(&["memory", "pages_fetched"]), figure(&["disk", "blocks_fetched"]), figure(&["memory", "zero_pages"]));
    let seconds_on_server = figure(&["seconds"]);
    let last_on_server = last_count(&office.server_serial()).unwrap_or(0);

    println!("demo: the user comes back and moves the mouse");
    let user = User::arrives(&xvfb);
    let returned_at = watch.now();
    office.wait_until_home(guest.wait(), "the user came back but the VM did not");
    let back = wait_for_status(&office, &socket, guest.wait(), "the daemon never saw the user back", |s| {
        s["activity"]["state"] == "watching" && s["sleep"]["state"] == "not_sleeping"
    });
    println!("demo: the daemon brought {VM} home");
    let trace = keep_trace(&office, &shots);
    let counting = wait_for_count_above(&office.desktop_serial(), 0, COUNT_TIMEOUT);
    let file_back = guest.file_back(&office, &client, &saved);
    client.wait_for(client.count() + 2, REPLY);
    drop(user);
    let (log, broken) = client.finish();
    let samples = watch.finish();

    // The daemon's own figures: its metrics (host 0 is the desktop), its
    // log (the consolidation's downtime), its status and its ledger.
    let metrics = office.scrape(0);
    let series = |name: &str| metrics.value(&format!("{name}{{vm=\"{VM}\"}}"));
    let consolidation_secs = series("jettison_consolidation_seconds_sum");
    let descriptor_bytes = series("jettison_sent_bytes_total") as u64;
    let back_secs = series("jettison_reintegration_seconds_sum");
    let back_bytes = series("jettison_received_bytes_total") as u64;
    let (dirty_pages, dirty_blocks) =
        (series("jettison_reintegrated_pages_total") as u64, series("jettison_reintegrated_blocks_total") as u64);
    let desktop_log = office.log("desktop");
    let downtime = logged_figure(&desktop_log, "downtime_secs");
    let sleep = &back["sleep"];
    let count = |key: &str| sleep[key].as_u64().unwrap_or(0);
    let (sleeps, wakes) = (count("sleeps"), count("wakes"));
    let ledger_dir = Path::new(sleep["ledger_dir"].as_str().expect("the status names the ledger's directory"));
    let ledger: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ledger_dir.join(power::LEDGER_FILE)).expect("the desktop daemon wrote its ledger"),
    )
    .expect("the ledger is JSON");
    let total = &ledger["total"];
    let number = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let (asleep_secs, saved_joules, saved_percent) =
        (number(&sleep["asleep_secs"]), number(&sleep["saved_joules"]), number(&sleep["saved_percent"]));
    let (stay_secs, used_joules, baseline_joules) =
        (number(&total["wall_secs"]), number(&total["joules"]), number(&total["idle_baseline_joules"]));

    // The timeline, as the paper's Figure 8: the desktop above, the server below.
    let profile = PowerProfile::TABLE_1;
    let chart = shots.join("power-timeline.svg");
    let timeline = timeline(&samples, &profile, warned_at, returned_at, saved_percent);
    std::fs::write(&chart, power_timeline(&timeline)).expect("the timeline can be written");
    let chart_png = shots.join("power-timeline.png");
    let png_written = Command::new("rsvg-convert")
        .arg("-o")
        .arg(&chart_png)
        .arg(&chart)
        .status()
        .is_ok_and(|status| status.success());

    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let ram = spec.memory_mib << 20;
    let share = |bytes: u64| 100.0 * bytes as f64 / ram as f64;
    let out_bytes = (pages + blocks) * 4096 + descriptor_bytes;
    let survived = broken.is_none() && std::panic::catch_unwind(|| assert_continuous(&log)).is_ok();
    let state_kept = counting + 10 >= last_on_server && file_back;
    println!();
    println!("Jettison demo report");
    println!("guest                    {}", guest.describe(&spec));
    println!(
        "user idle                no input on X display {} for {IDLE_SECS} s: the daemon's warning window \
         appeared, {WARN_SECS} s later it moved {VM} itself",
        xvfb.display
    );
    println!(
        "consolidation            {consolidation_secs:.2} s ({}), descriptor {descriptor_bytes} bytes",
        downtime.map_or("downtime not logged".to_owned(), |d| format!("{d:.2} s with the VM stopped"))
    );
    println!(
        "pages fetched            {pages} ({:.1} MiB = {:.1}% of RAM) in {seconds_on_server} s on the server; \
         {zero_pages} zero pages never fetched",
        mib(pages * 4096),
        share(pages * 4096),
    );
    println!("bytes to the server      {:.1} MiB = {:.1}% of RAM", mib(out_bytes), share(out_bytes));
    println!(
        "desktop sleeps           {sleeps} (emulated S3), {wakes} wakes by the server's Wake-on-LAN for pages and \
         blocks, {asleep_secs:.1} s asleep of {stay_secs:.1} s with the VM away"
    );
    println!(
        "energy saved             {:.2} kJ = {saved_percent:.1}% of the idle desktop's energy while the VM was away \
         ({:.2} kJ used, {:.2} kJ idle; Table 1 profile, the desktop's power ledger)",
        saved_joules / 1000.0,
        used_joules / 1000.0,
        baseline_joules / 1000.0
    );
    println!(
        "reintegration            {back_secs:.2} s at the user's return, {:.1} MiB back = {:.1}% of RAM \
         ({dirty_pages} dirty pages, {dirty_blocks} dirty blocks)",
        mib(back_bytes),
        share(back_bytes),
    );
    match &trace {
        Ok((file, trace)) => {
            let later = trace.fetches.iter().filter(|f| (quiet_from..quiet_until).contains(&f.asked_ns));
            let (memory, disk) = later.fold((0, 0), |(m, d), f| match f.device {
                fetch_trace::Device::Memory => (m + 1, d),
                fetch_trace::Device::Disk => (m, d + 1),
            });
            println!(
                "fetch trace              {} ({} requests to the desktop; {memory} for memory and {disk} for disk \
                 in the last {} s away)",
                file.display(),
                trace.fetches.len(),
                ASLEEP.as_secs()
            );
        }
        Err(why) => println!("fetch trace              NONE: {why}"),
    }
    let kept = if state_kept { "yes (its counter, and the file it wrote on the server)" } else { "NO" };
    println!("guest state kept         {kept}");
    let connection = match (survived, broken) {
        (true, _) => format!("survived ({} exchanges on one connection, none lost)", log.len()),
        (false, Some(why)) => format!("BROKE: {why}"),
        (false, None) => "BROKE: a reply was lost or repeated".to_owned(),
    };
    println!("client connection        {connection}");
    let (pattern, shown) = guest.screen_kept(&screen);
    println!("screen on the server     {} ({}x{}, {shown})", png.display(), screen.width, screen.height);
    println!(
        "power timeline           {}{} (desktop and server, like the paper's Fig. 8)",
        chart.display(),
        if png_written { format!(" and {}", chart_png.display()) } else { String::new() }
    );
    if survived && state_kept && pattern && sleeps >= 2 && wakes >= 1 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Copies the stay's fetch trace, which the server keeps in the VM's
/// history once it is home, beside the timeline, and reads it.
fn keep_trace(office: &Office, shots: &Path) -> Result<(PathBuf, fetch_trace::Trace), String> {
    let history = office.server_vm_history();
    let stays = std::fs::read_dir(&history).map_err(|e| format!("cannot list {}: {e}", history.display()))?;
    let stay = stays.filter_map(Result::ok).map(|entry| entry.path()).max().ok_or("the server kept no trace")?;
    let file = shots.join("fetch-trace.csv");
    std::fs::copy(&stay, &file).map_err(|e| format!("cannot copy {}: {e}", stay.display()))?;
    let trace = fetch_trace::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Ok((file, trace))
}

/// The desktop's status until `done` holds of it, or the panic with the logs.
fn wait_for_status(
    office: &Office,
    socket: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let status = office.jettison_json(&["status", "--daemon", socket]);
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "demo: {what}: {status}\n{}", office.logs());
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The number after `key=` in the log's last line that has it.
fn logged_figure(log: &str, key: &str) -> Option<f64> {
    let pattern = format!("{key}=");
    log.lines().rev().find_map(|line| {
        let rest = &line[line.find(&pattern)? + pattern.len()..];
        rest.split(|c: char| c.is_whitespace() || c == ',').next()?.parse().ok()
    })
}

/// What the desktop daemon said at one moment: where the VM was and the
/// desktop's sleep state.
#[derive(Debug, Clone)]
struct Sample {
    secs: f64,
    location: String,
    sleep: String,
}

/// The desktop daemon's status, asked every [`SAMPLE`] on a thread from
/// the moment it is started, for the timeline.
struct Watch {
    origin: Instant,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Watch {
    fn start(socket: &str) -> Watch {
        let origin = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (still, into, socket) = (Arc::clone(&stop), Arc::clone(&samples), socket.to_owned());
        let thread = std::thread::spawn(move || {
            while !still.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let out =
                    Command::new(tests::jettison_binary()).args(["status", "--daemon", &socket, "--json"]).output();
                let status: Option<serde_json::Value> =
                    out.ok().filter(|o| o.status.success()).and_then(|o| serde_json::from_slice(&o.stdout).ok());
                if let Some(status) = status {
                    let text = |v: &serde_json::Value| v.as_str().unwrap_or("unknown").to_owned();
                    let sample = Sample {
                        secs: asked.duration_since(origin).as_secs_f64(),
                        location: text(&status["vms"][0]["location"]),
                        sleep: text(&status["sleep"]["state"]),
                    };
                    into.lock().expect("the samples' lock").push(sample);
                }
                std::thread::sleep(SAMPLE.saturating_sub(asked.elapsed()));
            }
        });
        Watch { origin, stop, samples, thread }
    }

    /// Seconds since the watch started.
    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the watch does not panic");
        let samples = self.samples.lock().expect("the samples' lock").clone();
        samples
    }
}

/// The power timeline of the run: the desktop's from the sleep state the
/// daemon reported (each at its Table 1 power; awake at idle power), the
/// server's at the paper's server's idle power, the VM's stay shaded.
fn timeline(samples: &[Sample], profile: &PowerProfile, warned_at: f64, returned_at: f64, saved: f64) -> Timeline {
    let watts = |sample: &Sample| match sample.sleep.as_str() {
        "suspending" => profile.suspend_watts,
        "asleep" => profile.sleep_watts,
        "resuming" => profile.resume_watts,
        _ => profile.idle_watts,
    };
    let mut desktop: Vec<(f64, f64)> = Vec::new();
    for sample in samples {
        let w = watts(sample);
        if desktop.last().is_none_or(|&(_, last)| last != w) {
            desktop.push((sample.secs, w));
        }
    }
    let end = samples.last().map_or(0.0, |s| s.secs);
    if let Some(&(_, w)) = desktop.last() {
        desktop.push((end, w));
    }
    let start = samples.first().map_or(0.0, |s| s.secs);
    let on_server: Vec<f64> = samples.iter().filter(|s| s.location == "server").map(|s| s.secs).collect();
    let spans = match (on_server.first(), on_server.last()) {
        (Some(&from), Some(&to)) => {
            vec![TimelineSpan { from_secs: from, to_secs: to, label: "VM on the server".to_owned() }]
        }
        _ => Vec::new(),
    };
    let desktop = TimelinePanel {
        host: "desktop".to_owned(),
        source: format!(
            "its sleep state as jettison status said it every {} ms, at the paper's Table 1 power (awake: idle)",
            SAMPLE.as_millis()
        ),
        steps: desktop,
        baseline: Some((profile.idle_watts, format!("idle {} W", profile.idle_watts))),
        colour: "#c0392b".to_owned(),
    };
    let server = TimelinePanel {
        host: "server".to_owned(),
        source: format!("the paper's server at its idle {SERVER_WATTS} W (no power profile configured here)"),
        steps: vec![(start, SERVER_WATTS), (end, SERVER_WATTS)],
        baseline: None,
        colour: "#2c6fbb".to_owned(),
    };
    Timeline {
        title: "Jettison demo: power of desktop and server (like the paper's Fig. 8)".to_owned(),
        panels: vec![desktop, server],
        spans,
        notes: vec![
            format!(
                "The warning appeared at {warned_at:.0} s; the user came back at {returned_at:.0} s. The desktop's \
                 ledger: {saved:.1}% of its idle energy saved while the VM was away."
            ),
            format!(
                "The server's share of its {SERVER_WATTS} W for one VM, at the paper's {SERVER_VMS} VMs a server: {:.2} W.",
                SERVER_WATTS / SERVER_VMS
            ),
        ],
    }
}
