//! Reading a client config and replacing it without ever leaving it half-written.
//!
//! A file is replaced by writing a temporary file beside it and renaming it over the original,
//! only after checking that the original still holds exactly the bytes that were read (a
//! client or an editor may have saved it meanwhile). A symlinked config is written through to
//! its target, so a dotfile manager's link stays a link. The permissions are kept.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Larger files are refused: no client config is anywhere near this.
const MAX_BYTES: u64 = 16 << 20;

/// A config file as read.
pub struct Loaded {
    /// The path as given, for messages.
    pub shown: PathBuf,
    /// The file itself (symlinks resolved): where the new text goes.
    real: PathBuf,
    pub text: String,
    modified: Option<std::time::SystemTime>,
    permissions: fs::Permissions,
}

/// Reads `path`, with an error that says what to do when it cannot.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let shown = path.to_path_buf();
    let real = fs::canonicalize(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "{} does not exist; check the path (`mcpwatch clients` lists the files it found)",
            path.display()
        ),
        _ => anyhow::anyhow!("cannot open {}: {e}", path.display()),
    })?;
    let meta = fs::metadata(&real).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    if meta.len() > MAX_BYTES {
        bail!(
            "{} is {} bytes, more than the {MAX_BYTES} a client config can be; check it is the right file",
            path.display(),
            meta.len()
        );
    }
    let bytes = fs::read(&real).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!("{} is not UTF-8 text; nothing was changed", path.display())
    })?;
    Ok(Loaded {
        shown,
        real,
        text,
        modified: meta.modified().ok(),
        permissions: meta.permissions(),
    })
}

impl Loaded {
    /// The file itself, symlinks resolved: what route records name.
    pub fn real_path(&self) -> String {
        self.real.display().to_string()
    }

    /// Refuses a file its permissions mark read-only (root could write it, but should not).
    pub fn check_writable(&self) -> anyhow::Result<()> {
        if self.permissions.readonly() {
            bail!(
                "{} is read-only; make it writable (chmod u+w) to change it, nothing was written",
                self.shown.display()
            );
        }
        Ok(())
    }

    /// Copies the original bytes to the first free `FILE.mcpwatch-backup[.N]`; returns its path.
    pub fn backup(&self) -> anyhow::Result<PathBuf> {
        let base = self.real.as_os_str().to_owned();
        for n in 0..1000u32 {
            let mut name = base.clone();
            name.push(".mcpwatch-backup");
            if n > 0 {
                name.push(format!(".{n}"));
            }
            let path = PathBuf::from(name);
            let mut f = match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => bail!(
                    "cannot write the backup {}: {e}; nothing was changed",
                    path.display()
                ),
            };
            f.write_all(self.text.as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot write the backup {}", path.display()))?;
            return Ok(path);
        }
        bail!(
            "{} has 1000 backups already; remove old *.mcpwatch-backup* files",
            self.shown.display()
        )
    }

    /// Replaces the file with `text`, unless it changed since it was read.
    pub fn replace(&self, text: &str) -> anyhow::Result<()> {
        self.check_writable()?;
        let dir = self.real.parent().unwrap_or(Path::new("."));
        let file_name = self
            .real
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{file_name}.mcpwatch-{}.tmp", std::process::id()));
        let result = self.write_then_rename(&tmp, text);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn write_then_rename(&self, tmp: &Path, text: &str) -> anyhow::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .with_context(|| format!("cannot create {}; nothing was changed", tmp.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.set_permissions(self.permissions.clone()))
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}; nothing was changed", tmp.display()))?;
        drop(f);
        let now = fs::read(&self.real).ok();
        let modified = fs::metadata(&self.real)
            .ok()
            .and_then(|m| m.modified().ok());
        if now.as_deref() != Some(self.text.as_bytes()) || modified != self.modified {
            bail!(
                "{} changed since it was read (a client or an editor saved it); nothing was written, run the command again",
                self.shown.display()
            );
        }
        fs::rename(tmp, &self.real).with_context(|| {
            format!(
                "cannot replace {}; nothing was changed",
                self.shown.display()
            )
        })?;
        if let Ok(d) = fs::File::open(self.real.parent().unwrap_or(Path::new("."))) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}
