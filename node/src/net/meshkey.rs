//! The mesh key: a pre-shared key that makes a mesh private.
//!
//! With a key, every TCP connection is encrypted with it (libp2p `pnet`,
//! XSalsa20) before anything else is said, so a node without the same key
//! cannot even complete the Noise handshake. The file uses the format of the
//! IPFS swarm key (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits), so
//! tools that know that format can read it. Its fingerprint may be shown and
//! compared; the key itself must not be.

use std::path::Path;

use libp2p::pnet::PreSharedKey;

use crate::store::write_private;

/// Reads a mesh key file; the error names the file and how to make one.
pub fn read(path: &Path) -> anyhow::Result<PreSharedKey> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the mesh key {}: {e}; make one with `fusi-node keygen {}` and copy it to every node",
            path.display(),
            path.display()
        )
    })?;
    warn_if_readable_by_others(path);
    text.trim_end()
        .parse::<PreSharedKey>()
        .or_else(|_| text.parse::<PreSharedKey>())
        .map_err(|e| {
            anyhow::anyhow!(
                "{} is not a mesh key ({e}); make one with `fusi-node keygen FILE`",
                path.display()
            )
        })
}

/// Whether a key file with permission bits `mode`, of group `file_gid`, can
/// be read by others than this process's user: any user, or a group other
/// than the process's own (`egid`). A Kubernetes pod's `fsGroup` makes a
/// Secret's files group-readable by the pod's own group, which is no leak.
fn exposed(mode: u32, file_gid: u32, egid: u32) -> bool {
    mode & 0o007 != 0 || (mode & 0o070 != 0 && file_gid != egid)
}

/// Warns when others than the owner may read a key file.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // SAFETY: getegid has no preconditions and cannot fail.
        let egid = unsafe { libc::getegid() };
        if let Ok(meta) = std::fs::metadata(path)
            && exposed(meta.permissions().mode(), meta.gid(), egid)
        {
            tracing::warn!(
                "the mesh key {} can be read by other users; run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
}

/// Makes a fresh random key and writes it to `path` (mode 0600); refuses to
/// overwrite a file.
pub fn generate(path: &Path) -> anyhow::Result<PreSharedKey> {
    let key = PreSharedKey::new(rand::random());
    write_private(path, key.to_string().as_bytes()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} exists; a mesh key is never overwritten (remove it first, and give the new key to every node)",
                path.display()
            )
        } else {
            anyhow::anyhow!("cannot write the mesh key {}: {e}", path.display())
        }
    })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_readable_by_its_own_group_only_is_not_exposed() {
        assert!(!exposed(0o100600, 5, 7));
        assert!(!exposed(0o100440, 7, 7), "a pod's fsGroup");
        assert!(exposed(0o100640, 5, 7));
        assert!(exposed(0o100604, 7, 7));
    }

    #[test]
    fn a_generated_key_reads_back_and_is_not_overwritten() {
        let path = std::env::temp_dir().join(format!("fusi-meshkey-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let key = generate(&path).unwrap();
        assert_eq!(
            read(&path).unwrap().fingerprint().to_string(),
            key.fingerprint().to_string()
        );
        assert!(
            generate(&path)
                .unwrap_err()
                .to_string()
                .contains("never overwritten")
        );
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "not a key").unwrap();
        assert!(
            read(&path)
                .unwrap_err()
                .to_string()
                .contains("is not a mesh key")
        );
        std::fs::remove_file(&path).unwrap();
        assert!(
            read(&path)
                .unwrap_err()
                .to_string()
                .contains("fusi-node keygen")
        );
    }
}
