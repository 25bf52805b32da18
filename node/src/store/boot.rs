//! `boot`: the number this node's heartbeats carry as its boot.
//!
//! Members tell a restart from a stale heartbeat by the boot: a newer one is
//! the same node started again, an older one is ignored. The boot was the
//! wall clock at start, so a node restarted with its clock behind its last
//! start (a clock stepped back, a VM restored from a snapshot) was ignored
//! by every member until its clock caught up. The last boot is therefore
//! kept here, and the next is the wall clock or one more than the last,
//! whichever is larger.

use std::fs;
use std::io::Write;

use super::{DataDir, StoreError};

impl DataDir {
    /// This start's boot: `now_ns`, or one more than the last boot kept in
    /// the data dir if that is larger; kept for the next start (written to
    /// a temporary file, synced, then renamed). A boot file that does not
    /// read as a number is replaced.
    pub fn next_boot(&self, now_ns: u64) -> Result<u64, StoreError> {
        let file = self.path().join("boot");
        let last = fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        let boot = last.map_or(now_ns, |last| now_ns.max(last.saturating_add(1)));
        let tmp = self.path().join(".boot.tmp");
        let io = |action: &'static str| {
            let path = tmp.clone();
            move |source| StoreError::Io {
                action,
                path,
                source,
            }
        };
        let mut out = fs::File::create(&tmp).map_err(io("cannot write the boot counter"))?;
        writeln!(out, "{boot}").map_err(io("cannot write the boot counter"))?;
        out.sync_all().map_err(io("cannot sync the boot counter"))?;
        fs::rename(&tmp, &file).map_err(io("cannot replace the boot counter with"))?;
        Ok(boot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boot_never_goes_back_whatever_the_clock_says() {
        let dir = std::env::temp_dir().join(format!("fusi-boot-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = DataDir::open(&dir).expect("opens");
        assert_eq!(store.next_boot(1_000).expect("boot"), 1_000);
        assert_eq!(store.next_boot(5_000).expect("boot"), 5_000);
        assert_eq!(store.next_boot(10).expect("boot"), 5_001, "clock behind");
        fs::write(dir.join("boot"), b"garbage").expect("write");
        assert_eq!(
            store.next_boot(7).expect("boot"),
            7,
            "a garbled file is replaced"
        );
        drop(store);
        let _ = fs::remove_dir_all(&dir);
    }
}
