//! Who owns the segments of a spool folder: the process holding the OS lock on `<id>.lock`.
//!
//! A segment named `<seq>-<id>.ndjson` belongs to whoever holds an exclusive `flock` on
//! `<id>.lock` in the same folder. The lock is taken when a process opens the folder's spool
//! and is released by the kernel when that process ends, however it ends, so ownership never
//! depends on whether a pid happens to be in use: a reused pid, or another PID namespace sharing
//! the data dir, cannot make a dead owner look alive or two live processes share an id.
//!
//! A process asks for its pid as its id; when another process already holds that id's lock
//! (the same pid in another namespace), it takes the first free id above the largest pid Linux
//! hands out, which no process can have.

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::CaptureError;

/// Above Linux's largest `pid_max` (2^22): ids from here on are no process's pid.
const NON_PID_IDS: u32 = 1 << 22;
/// How many ids above [`NON_PID_IDS`] are tried before giving up.
const MAX_TRIES: u32 = 4096;

/// The held lock that makes this process the owner of `id`'s segments in one folder.
#[derive(Debug)]
pub(crate) struct OwnerLock {
    pub id: u32,
    _lock: Flock<File>,
}

fn lock_path(dir: &Path, id: u32) -> std::path::PathBuf {
    dir.join(format!("{id}.lock"))
}

fn try_lock(dir: &Path, id: u32) -> Result<Option<Flock<File>>, CaptureError> {
    let path = lock_path(dir, id);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| CaptureError::io(&path, e))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(CaptureError::io(&path, std::io::Error::from(e))),
    }
}

/// Takes ownership in `dir` as `preferred` (the pid), or as a free id when that one is held.
pub(crate) fn take(dir: &Path, preferred: u32) -> Result<OwnerLock, CaptureError> {
    let candidates = std::iter::once(preferred).chain(NON_PID_IDS..NON_PID_IDS + MAX_TRIES);
    for id in candidates {
        if let Some(lock) = try_lock(dir, id)? {
            return Ok(OwnerLock { id, _lock: lock });
        }
    }
    Err(CaptureError::io(
        dir,
        std::io::Error::other("every spool owner id is locked by a running process"),
    ))
}

/// Whether a running process holds the lock of `id` in `dir`. No lock file means no owner
/// (segments written before ownership was locked are adopted).
pub(crate) fn held(dir: &Path, id: u32) -> bool {
    let path = lock_path(dir, id);
    let Ok(file) = File::open(&path) else {
        return false;
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        // Free: nobody owns it; dropping the probe releases it at once.
        Ok(_) => false,
        Err((_, Errno::EWOULDBLOCK)) => true,
        // Cannot tell: assume a live owner, so its segments are never taken from it.
        Err(_) => true,
    }
}
