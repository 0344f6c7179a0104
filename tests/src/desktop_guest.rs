//! The Debian desktop guest of `scripts/desktop-guest-image`, seen from
//! outside: whether its screen shows the session with Firefox's local page,
//! and its guest agent once it answers. Shared by its end-to-end test and
//! the demo's `--desktop-guest`.

use std::path::Path;
use std::time::{Duration, Instant};

use qemu_driver::GuestAgent;

use crate::office::{Office, VM};
use crate::screen::{Screenshot, PAGE_COLOUR};

/// Bound on the first boot to a session with Firefox on the screen under TCG.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// Takes a screenshot through the daemon at `socket` and says whether it
/// shows the session with Firefox's local page, and what it shows.
pub fn screen(office: &Office, socket: &Path, name: &str, dir: &Path) -> (bool, String) {
    let file = dir.join(format!("{name}.ppm"));
    let out = office.jettison(&["screenshot", VM, file.to_str().unwrap(), "--socket", socket.to_str().unwrap()]);
    assert!(out.status.success(), "screenshot {name}: {}\n{}", String::from_utf8_lossy(&out.stderr), office.logs());
    let shot = Screenshot::read_ppm(&file).unwrap();
    let what = format!(
        "{name}: {}x{} screen, {} colours, {:.1}% Firefox's page ({})",
        shot.width,
        shot.height,
        shot.distinct_colours(),
        shot.share_of(PAGE_COLOUR) * 100.0,
        file.display()
    );
    (shot.shows_desktop_session(), what)
}

/// Waits until the screen through `socket` shows the session with Firefox.
pub fn wait_for_session_on_screen(office: &Office, socket: &Path, name: &str, dir: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (shown, what) = screen(office, socket, name, dir);
        if shown {
            eprintln!("{what}");
            return;
        }
        assert!(Instant::now() < deadline, "no session on the screen: {what}\n{}", office.logs());
        std::thread::sleep(Duration::from_secs(10));
    }
}

/// The guest agent behind `socket`, once it answers (it starts late in a
/// boot, and a guest just moved may be busy).
pub fn agent(socket: &Path, office: &Office) -> GuestAgent {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match GuestAgent::connect(socket) {
            Ok(agent) => return agent,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the guest agent at {} never answered: {e}\n{}",
                    socket.display(),
                    office.logs()
                );
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
}
