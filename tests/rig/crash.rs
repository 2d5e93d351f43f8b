//! Killing the daemon (SIGKILL) at one step of a journaled operation, through the
//! daemon's own test hook, then starting it again so its start-up recovery runs.

use super::{wait_until, Rig};
use std::time::Duration;

impl Rig {
    /// Restarts the daemon with [`osm_hostd::engine::RESTORE_CRASH_ENV`] set to `step`,
    /// runs `osm-hostctl args` (which fails: the daemon kills itself at that step), waits
    /// for the daemon to be gone and starts it again without the hook. Returns the
    /// failed command's stderr.
    pub fn kill_daemon_at(&mut self, step: &str, args: &[&str]) -> String {
        let env = osm_hostd::engine::RESTORE_CRASH_ENV;
        self.daemon_mut().stop();
        self.daemon_mut().set_env(env, Some(step));
        self.daemon_mut().start();
        let out = self.ctl(args);
        assert!(
            !out.status.success(),
            "{step}: the daemon should have died during {args:?}: {out:?}"
        );
        assert!(
            wait_until(Duration::from_secs(20), || !self.daemon_mut().is_running()),
            "{step}: the daemon is still running"
        );
        self.daemon_mut().set_env(env, None);
        self.daemon_mut().start();
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}
