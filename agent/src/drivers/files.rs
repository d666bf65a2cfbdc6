//! Files inside the configured roots (`[files] roots`), for the external API's file manager.
//!
//! Confinement does not rely on string checks alone: every path is opened relative to its root's
//! directory with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so the kernel refuses any
//! resolution that leaves the root, whatever `..` or symbolic link (in the middle or at the end)
//! it goes through, and a link swapped in between a check and the open cannot escape either.
//! Hosts without `openat2` (Linux < 5.6, some seccomp filters) fall back to canonicalising and
//! opening with `O_NOFOLLOW`. Symbolic links with a relative target that stays inside are
//! followed; a link with an absolute target is refused (the kernel cannot confine it). On top: `..` components are refused outright, only regular files
//! are read or written (devices, FIFOs and sockets: 403, opened non-blocking so a FIFO cannot
//! hang the agent), writes go to a temporary file in the same directory that is fsynced and
//! renamed over the target (keeping its mode and owner), and reads and writes have size caps.
//!
//! Deleting without `permanent` moves entries into a trash inside their own root
//! ([`trash`]); that directory is hidden from listings and refused as the target of every other
//! operation, so its contents change only through the trash operations.

mod trash;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flotilla_protocol::files::{FileAnswer, FileEntry, FileError, FileErrorKind, FileKind, FileOp, FileWrite, CHUNK};

use self::trash::TRASH_DIR;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use serde::Deserialize;

/// Default largest file read: 5 MiB.
pub const DEFAULT_READ_MAX: u64 = 5 * 1024 * 1024;
/// Default largest file written: 10 MiB.
pub const DEFAULT_WRITE_MAX: u64 = 10 * 1024 * 1024;
/// A chunked write not finished within this is abandoned (its staged file removed).
const UPLOAD_TTL: Duration = Duration::from_secs(600);

/// `[files]` in `agent.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesSettings {
    /// Absolute directories the API may act in (empty: files off, `FILES` not announced).
    pub roots: Vec<PathBuf>,
    /// Largest file read, bytes.
    pub read_max_bytes: u64,
    /// Largest file written, bytes.
    pub write_max_bytes: u64,
    /// Days a trashed entry is kept before it is removed for good (0: until emptied).
    pub trash_days: u32,
}

/// Default days an entry stays in the trash.
pub const DEFAULT_TRASH_DAYS: u32 = 30;

impl Default for FilesSettings {
    fn default() -> Self {
        FilesSettings {
            roots: vec![],
            read_max_bytes: DEFAULT_READ_MAX,
            write_max_bytes: DEFAULT_WRITE_MAX,
            trash_days: DEFAULT_TRASH_DAYS,
        }
    }
}

impl FilesSettings {
    /// Checks the roots: absolute, existing directories.
    pub fn validate(&self) -> Result<(), String> {
        for root in &self.roots {
            if !root.is_absolute() {
                return Err(format!("root {} is not an absolute path", root.display()));
            }
        }
        Ok(())
    }
}

type FileResult<T> = std::result::Result<T, FileError>;

fn err(kind: FileErrorKind, message: impl Into<String>) -> FileError {
    FileError { kind, message: message.into() }
}

fn forbidden(message: impl Into<String>) -> FileError {
    err(FileErrorKind::Forbidden, message)
}

fn bad(message: impl Into<String>) -> FileError {
    err(FileErrorKind::BadInput, message)
}

/// What an errno means to the caller of `what`.
fn errno(e: Errno, what: &str) -> FileError {
    match e {
        Errno::XDEV => forbidden(format!("{what}: leaves the allowed directories")),
        Errno::LOOP => forbidden(format!("{what}: a symbolic link that cannot be followed here")),
        Errno::ACCESS | Errno::PERM | Errno::ROFS => forbidden(format!("{what}: permission denied")),
        // Opening a socket, or a device without a driver.
        Errno::NXIO | Errno::NODEV => forbidden(format!("{what}: not a regular file (device, FIFO or socket)")),
        Errno::NOENT => err(FileErrorKind::NotFound, format!("{what}: no such file or directory")),
        Errno::NOTDIR => bad(format!("{what}: not a directory")),
        Errno::ISDIR => bad(format!("{what}: is a directory")),
        Errno::EXIST => err(FileErrorKind::Exists, format!("{what}: already exists")),
        Errno::NOTEMPTY => err(FileErrorKind::Exists, format!("{what}: directory not empty")),
        Errno::NAMETOOLONG | Errno::INVAL => bad(format!("{what}: invalid name")),
        Errno::NOSPC | Errno::DQUOT | Errno::FBIG => err(FileErrorKind::TooLarge, format!("{what}: no space left")),
        other => err(FileErrorKind::Failed, format!("{what}: {other}")),
    }
}

fn io_err(e: std::io::Error, what: &str) -> FileError {
    match e.raw_os_error() {
        Some(code) => errno(Errno::from_raw_os_error(code), what),
        None => err(FileErrorKind::Failed, format!("{what}: {e}")),
    }
}

/// One allowed directory: as configured (what callers see) and where it really is.
#[derive(Debug, Clone)]
struct Root {
    shown: PathBuf,
    real: PathBuf,
}

/// A path inside a root: the root and the path relative to it (no `..`, no leading `/`).
#[derive(Debug, Clone)]
struct Located {
    root: usize,
    rel: PathBuf,
    /// As the caller wrote it, for messages.
    shown: String,
}

impl Located {
    /// Parent (relative) and final name; `None` for the root itself.
    fn split(&self) -> Option<(PathBuf, &OsStr)> {
        let name = self.rel.file_name()?;
        Some((self.rel.parent().map(Path::to_path_buf).unwrap_or_default(), name))
    }
}

/// A chunked write in progress.
#[derive(Debug)]
struct Upload {
    path: String,
    staged: String,
    written: u64,
    started: Instant,
    create_only: bool,
}

/// The files driver; `None` from [`FilesDriver::new`] when no root is configured.
#[derive(Debug)]
pub struct FilesDriver {
    roots: Vec<Root>,
    read_max: u64,
    write_max: u64,
    /// How long trashed entries are kept, ms (None: until emptied).
    trash_keep_ms: Option<i64>,
    uploads: Mutex<HashMap<u64, Upload>>,
}

/// `O_CLOEXEC` and the flags every lookup gets.
fn resolve_flags() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

impl FilesDriver {
    /// A driver for `settings`' roots (None when there are none). Roots that do not exist yet
    /// are created (mode 0755).
    pub fn new(settings: &FilesSettings) -> Result<Option<FilesDriver>, String> {
        settings.validate()?;
        if settings.roots.is_empty() {
            return Ok(None);
        }
        let mut roots = vec![];
        for root in &settings.roots {
            std::fs::create_dir_all(root).map_err(|e| format!("root {}: {e}", root.display()))?;
            let real = std::fs::canonicalize(root).map_err(|e| format!("root {}: {e}", root.display()))?;
            if !real.is_dir() {
                return Err(format!("root {} is not a directory", root.display()));
            }
            roots.push(Root { shown: root.clone(), real });
        }
        Ok(Some(FilesDriver {
            roots,
            read_max: settings.read_max_bytes,
            write_max: settings.write_max_bytes,
            trash_keep_ms: (settings.trash_days > 0).then(|| i64::from(settings.trash_days) * 86_400_000),
            uploads: Mutex::new(HashMap::new()),
        }))
    }

    /// Answers one request (blocking: call it off the async threads).
    pub fn handle(&self, op: FileOp) -> FileAnswer {
        let result = match op {
            FileOp::Roots => {
                Ok(FileAnswer::Roots { dirs: self.roots.iter().map(|r| r.shown.display().to_string()).collect() })
            }
            FileOp::List { path, show_hidden } => {
                self.list(&path, show_hidden).map(|entries| FileAnswer::List { entries })
            }
            FileOp::Read { path, offset, max_bytes } => self.read(&path, offset, max_bytes),
            FileOp::Write(write) => self.write(write).map(|()| FileAnswer::Done),
            FileOp::Create { parent, name, kind, content } => {
                self.create(&parent, &name, kind, &content).map(|()| FileAnswer::Done)
            }
            FileOp::Delete { paths, recursive } => self.delete(&paths, recursive).map(|()| FileAnswer::Done),
            FileOp::Trash { paths } => self.trash(&paths).map(|entries| FileAnswer::Trashed { entries }),
            FileOp::TrashList { page, limit } => {
                self.trash_list(page, limit).map(|(entries, total)| FileAnswer::TrashList { entries, total })
            }
            FileOp::TrashStats => self.trash_stats().map(|roots| FileAnswer::TrashStats { roots }),
            FileOp::TrashRestore { id } => self.trash_restore(&id).map(FileAnswer::Restored),
            FileOp::TrashDelete { id } => {
                self.trash_delete(&id).map(|(count, bytes)| FileAnswer::TrashRemoved { count, bytes })
            }
            FileOp::TrashEmpty => self.trash_empty().map(|(count, bytes)| FileAnswer::TrashRemoved { count, bytes }),
        };
        result.unwrap_or_else(FileAnswer::Error)
    }

    /// Which root `path` is in: absolute paths must lie under a root (as configured or as
    /// resolved), relative ones are taken from the first root. `..` and the roots' trash are
    /// refused.
    fn locate(&self, path: &str) -> FileResult<Located> {
        let at = self.locate_any(path)?;
        if at.rel.components().next() == Some(Component::Normal(OsStr::new(TRASH_DIR))) {
            return Err(forbidden(format!("{path}: the trash is reached through the trash endpoints only")));
        }
        Ok(at)
    }

    fn locate_any(&self, path: &str) -> FileResult<Located> {
        if path.contains('\0') {
            return Err(bad("a path cannot contain NUL"));
        }
        let p = Path::new(path);
        if p.components().any(|c| c == Component::ParentDir) {
            return Err(forbidden(format!("{path}: `..` is not allowed")));
        }
        let clean = |p: &Path| -> PathBuf { p.components().filter(|c| matches!(c, Component::Normal(_))).collect() };
        if !p.is_absolute() {
            return Ok(Located { root: 0, rel: clean(p), shown: path.to_string() });
        }
        for (i, root) in self.roots.iter().enumerate() {
            for base in [&root.shown, &root.real] {
                if let Ok(rest) = p.strip_prefix(base) {
                    return Ok(Located { root: i, rel: clean(rest), shown: path.to_string() });
                }
            }
        }
        Err(forbidden(format!("{path}: outside the allowed directories")))
    }

    fn root_fd(&self, root: usize) -> FileResult<OwnedFd> {
        let root = &self.roots[root];
        rustix::fs::open(&root.real, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| errno(e, &root.shown.display().to_string()))
    }

    /// Opens `rel` beneath its root with `flags`; the kernel refuses escapes. What resolves into
    /// a trash (through a symbolic link) is refused too.
    fn open(&self, at: &Located, rel: &Path, flags: OFlags, mode: Mode) -> FileResult<OwnedFd> {
        let root = self.root_fd(at.root)?;
        let rel: &Path = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        let fd = match rustix::fs::openat2(&root, rel, flags | OFlags::CLOEXEC, mode, resolve_flags()) {
            Err(Errno::NOSYS) | Err(Errno::PERM) if !openat2_works() => self.open_fallback(at, rel, flags, mode),
            other => other.map_err(|e| errno(e, &at.shown)),
        }?;
        self.refuse_trash(fd, &at.shown)
    }

    /// `fd` unless it lies in a root's trash (where the kernel says it is: `/proc/self/fd`; where
    /// that is not mounted, `locate`'s check of the path as written is what remains).
    fn refuse_trash(&self, fd: OwnedFd, shown: &str) -> FileResult<OwnedFd> {
        use std::os::fd::AsRawFd;
        if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
            if self.roots.iter().any(|r| real.starts_with(r.real.join(TRASH_DIR))) {
                return Err(forbidden(format!("{shown}: the trash is reached through the trash endpoints only")));
            }
        }
        Ok(fd)
    }

    /// Without `openat2`: the parent canonicalised and checked, the last component not followed.
    fn open_fallback(&self, at: &Located, rel: &Path, flags: OFlags, mode: Mode) -> FileResult<OwnedFd> {
        let root = &self.roots[at.root].real;
        let full = root.join(rel);
        let real = match std::fs::canonicalize(&full) {
            Ok(real) => real,
            Err(_) => {
                let parent = full.parent().unwrap_or(root);
                let real_parent = std::fs::canonicalize(parent).map_err(|e| io_err(e, &at.shown))?;
                real_parent.join(full.file_name().unwrap_or_default())
            }
        };
        if !real.starts_with(root) {
            return Err(forbidden(format!("{}: leaves the allowed directories", at.shown)));
        }
        rustix::fs::open(&real, flags | OFlags::CLOEXEC | OFlags::NOFOLLOW, mode).map_err(|e| errno(e, &at.shown))
    }

    /// The directory holding `at`'s last component, and that name.
    fn parent_dir<'a>(&self, at: &'a Located) -> FileResult<(OwnedFd, &'a OsStr)> {
        let (parent, name) =
            at.split().ok_or_else(|| forbidden(format!("{}: an allowed directory itself", at.shown)))?;
        let fd = self.open(at, &parent, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())?;
        Ok((fd, name))
    }

    fn list(&self, path: &str, show_hidden: bool) -> FileResult<Vec<FileEntry>> {
        let at = self.locate(path)?;
        let dir = self.open(&at, &at.rel, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())?;
        // A root (also when reached through a link) never shows its trash.
        let here = rustix::fs::fstat(&dir).map_err(|e| errno(e, path))?;
        let is_root = self
            .roots
            .iter()
            .any(|r| rustix::fs::stat(&r.real).is_ok_and(|st| (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)));
        let names = Names::load();
        let mut entries = vec![];
        for entry in rustix::fs::Dir::read_from(&dir).map_err(|e| errno(e, path))? {
            let entry = entry.map_err(|e| errno(e, path))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." || (!show_hidden && name.starts_with(b".")) {
                continue;
            }
            if is_root && name == TRASH_DIR.as_bytes() {
                continue;
            }
            let name = OsStr::from_bytes(name);
            let Ok(st) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) else { continue };
            let kind = kind_of(FileType::from_raw_mode(st.st_mode as _));
            entries.push(FileEntry {
                name: name.to_string_lossy().into_owned(),
                kind,
                size: if kind == FileKind::Directory { 0 } else { st.st_size as u64 },
                mode: perm_bits(&st),
                owner: names.user(owner_of(&st).0),
                group: names.group(owner_of(&st).1),
                modified_ms: modified_ms(&st),
            });
        }
        entries.sort_by(|a, b| {
            (b.kind == FileKind::Directory).cmp(&(a.kind == FileKind::Directory)).then_with(|| a.name.cmp(&b.name))
        });
        Ok(entries)
    }

    fn read(&self, path: &str, offset: u64, max_bytes: u32) -> FileResult<FileAnswer> {
        let at = self.locate(path)?;
        // Non-blocking: opening a FIFO must not wait for a writer.
        let fd = self.open(&at, &at.rel, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY, Mode::empty())?;
        let st = rustix::fs::fstat(&fd).map_err(|e| errno(e, path))?;
        match FileType::from_raw_mode(st.st_mode as _) {
            FileType::RegularFile => {}
            FileType::Directory => return Err(bad(format!("{path}: is a directory"))),
            _ => return Err(forbidden(format!("{path}: not a regular file (device, FIFO or socket)"))),
        }
        let size = st.st_size as u64;
        if size > self.read_max {
            return Err(err(
                FileErrorKind::TooLarge,
                format!("{path}: {size} bytes, over the read limit of {} bytes", self.read_max),
            ));
        }
        let want = (max_bytes as usize).min(CHUNK) as u64;
        let len = size.saturating_sub(offset).min(want) as usize;
        let mut bytes = vec![0u8; len];
        let file = std::fs::File::from(fd);
        let mut got = 0;
        while got < len {
            match file.read_at(&mut bytes[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(e, path)),
            }
        }
        bytes.truncate(got);
        Ok(FileAnswer::Content { truncated: offset + (got as u64) < size, bytes, size, modified_ms: modified_ms(&st) })
    }

    /// Mode and owner of an existing target, which must be a regular file.
    fn existing(&self, dir: &OwnedFd, name: &OsStr, shown: &str) -> FileResult<Option<(u32, u32, u32)>> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => match FileType::from_raw_mode(st.st_mode as _) {
                FileType::RegularFile => Ok(Some((perm_bits(&st), owner_of(&st).0, owner_of(&st).1))),
                FileType::Directory => Err(bad(format!("{shown}: is a directory"))),
                FileType::Symlink => Err(forbidden(format!("{shown}: a symbolic link; write its target instead"))),
                _ => Err(forbidden(format!("{shown}: not a regular file (device, FIFO or socket)"))),
            },
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(errno(e, shown)),
        }
    }

    fn write(&self, w: FileWrite) -> FileResult<()> {
        let end = w.offset.saturating_add(w.content.len() as u64);
        if end > self.write_max {
            return Err(err(
                FileErrorKind::TooLarge,
                format!("{}: over the write limit of {} bytes", w.path, self.write_max),
            ));
        }
        let at = self.locate(&w.path)?;
        let (dir, name) = self.parent_dir(&at)?;
        let existing = self.existing(&dir, name, &w.path)?;
        if w.create_only && existing.is_some() {
            return Err(err(FileErrorKind::Exists, format!("{}: already exists", w.path)));
        }
        if w.upload == 0 {
            let staged = stage(&dir, name, &w.content, &w.path)?;
            return commit(&dir, &staged, name, existing, w.create_only, &w.path);
        }
        // Chunked: stage in order, commit on `finish`.
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        uploads.retain(|_, u| {
            let keep = u.started.elapsed() < UPLOAD_TTL;
            if !keep {
                if let Ok(at) = self.locate(&u.path) {
                    if let Ok((dir, _)) = self.parent_dir(&at) {
                        let _ = rustix::fs::unlinkat(&dir, u.staged.as_str(), AtFlags::empty());
                    }
                }
            }
            keep
        });
        if w.offset == 0 {
            if let Some(old) = uploads.remove(&w.upload) {
                let _ = rustix::fs::unlinkat(&dir, old.staged.as_str(), AtFlags::empty());
            }
            let staged = stage(&dir, name, &w.content, &w.path)?;
            uploads.insert(
                w.upload,
                Upload {
                    path: w.path.clone(),
                    staged,
                    written: w.content.len() as u64,
                    started: Instant::now(),
                    create_only: w.create_only,
                },
            );
        } else {
            let upload = uploads
                .get_mut(&w.upload)
                .filter(|u| u.path == w.path && u.written == w.offset)
                .ok_or_else(|| bad(format!("{}: chunk at {} out of order or unknown upload", w.path, w.offset)))?;
            let fd = rustix::fs::openat(
                &dir,
                upload.staged.as_str(),
                OFlags::WRONLY | OFlags::APPEND | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| errno(e, &w.path))?;
            std::fs::File::from(fd).write_all(&w.content).map_err(|e| io_err(e, &w.path))?;
            upload.written = end;
        }
        if w.finish {
            let upload = uploads.remove(&w.upload).expect("inserted or found above");
            let fd = rustix::fs::openat(&dir, upload.staged.as_str(), OFlags::WRONLY | OFlags::NOFOLLOW, Mode::empty())
                .map_err(|e| errno(e, &w.path))?;
            rustix::fs::fsync(&fd).map_err(|e| errno(e, &w.path))?;
            return commit(&dir, &upload.staged, name, existing, upload.create_only, &w.path);
        }
        Ok(())
    }

    fn create(&self, parent: &str, name: &str, kind: FileKind, content: &[u8]) -> FileResult<()> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
            return Err(bad(format!("{name:?}: not a valid file name")));
        }
        let full =
            if parent.is_empty() { name.to_string() } else { format!("{}/{name}", parent.trim_end_matches('/')) };
        let at = self.locate(&full)?;
        let (dir, base) = self.parent_dir(&at)?;
        match kind {
            FileKind::Directory => {
                rustix::fs::mkdirat(&dir, base, Mode::from_raw_mode(0o755)).map_err(|e| errno(e, &full))?;
                rustix::fs::fsync(&dir).map_err(|e| errno(e, &full))
            }
            FileKind::File => {
                if content.len() as u64 > self.write_max {
                    return Err(err(FileErrorKind::TooLarge, format!("{full}: over the write limit")));
                }
                if rustix::fs::statat(&dir, base, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                    return Err(err(FileErrorKind::Exists, format!("{full}: already exists")));
                }
                let staged = stage(&dir, base, content, &full)?;
                commit(&dir, &staged, base, None, true, &full)
            }
            other => Err(bad(format!("cannot create a {}", other.as_str()))),
        }
    }

    /// Each of `paths` located, with its parent directory open, after checking that every one
    /// exists (not following a final link): the all-or-nothing start of a delete or a trash.
    fn existing_entries(&self, paths: &[String]) -> FileResult<Vec<(Located, OwnedFd)>> {
        let mut targets = vec![];
        for path in paths {
            let at = self.locate(path)?;
            let (dir, name) = self.parent_dir(&at)?;
            rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| errno(e, path))?;
            targets.push((at, dir));
        }
        Ok(targets)
    }

    fn delete(&self, paths: &[String], recursive: bool) -> FileResult<()> {
        if paths.is_empty() {
            return Err(bad("no path to delete"));
        }
        // Every path is checked before anything is removed.
        let targets = self.existing_entries(paths)?;
        for (at, dir) in &targets {
            let name = at.split().expect("checked by parent_dir").1;
            let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| errno(e, &at.shown))?;
            if FileType::from_raw_mode(st.st_mode as _) == FileType::Directory {
                if recursive {
                    let sub = rustix::fs::openat(
                        dir,
                        name,
                        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| errno(e, &at.shown))?;
                    empty_dir(&sub, &at.shown)?;
                }
                rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(|e| errno(e, &at.shown))?;
            } else {
                rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(|e| errno(e, &at.shown))?;
            }
        }
        Ok(())
    }
}

/// Whether `openat2` is usable here (probed once).
fn openat2_works() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        rustix::fs::openat2(
            rustix::fs::CWD,
            "/",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::empty(),
        )
        .is_ok()
    })
}

/// Removes everything inside `dir` (fd-relative, never following links).
fn empty_dir(dir: &OwnedFd, shown: &str) -> FileResult<()> {
    let names: Vec<Vec<u8>> = rustix::fs::Dir::read_from(dir)
        .map_err(|e| errno(e, shown))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_bytes().to_vec())
        .filter(|n| n != b"." && n != b"..")
        .collect();
    for name in names {
        let name = OsStr::from_bytes(&name);
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| errno(e, shown))?;
        if FileType::from_raw_mode(st.st_mode as _) == FileType::Directory {
            let sub = rustix::fs::openat(
                dir,
                name,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| errno(e, shown))?;
            empty_dir(&sub, shown)?;
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(|e| errno(e, shown))?;
        } else {
            rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(|e| errno(e, shown))?;
        }
    }
    Ok(())
}

/// Writes `content` to a new hidden file beside `name` in `dir`, fsynced; returns its name.
fn stage(dir: &OwnedFd, name: &OsStr, content: &[u8], shown: &str) -> FileResult<String> {
    let staged = format!(".{}.flotilla-{:016x}.tmp", name.to_string_lossy(), rand::random::<u64>());
    let fd = rustix::fs::openat(
        dir,
        staged.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| errno(e, shown))?;
    let mut file = std::fs::File::from(fd);
    let written = file.write_all(content).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = rustix::fs::unlinkat(dir, staged.as_str(), AtFlags::empty());
        return Err(io_err(e, shown));
    }
    Ok(staged)
}

/// Gives the staged file the target's mode and owner (or 0644 and ours), renames it over `name`
/// (refusing to replace with `create_only`) and fsyncs the directory.
fn commit(
    dir: &OwnedFd,
    staged: &str,
    name: &OsStr,
    existing: Option<(u32, u32, u32)>,
    create_only: bool,
    shown: &str,
) -> FileResult<()> {
    let result = (|| {
        let fd = rustix::fs::openat(dir, staged, OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| errno(e, shown))?;
        let (mode, owner) = match existing {
            Some((mode, uid, gid)) => (mode, Some((uid, gid))),
            None => (0o644, None),
        };
        if let Some((uid, gid)) = owner {
            // Only root may give a file away; elsewhere the owner is ours anyway.
            let _ = rustix::fs::fchown(&fd, Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)));
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| errno(e, shown))?;
        if create_only {
            rustix::fs::renameat_with(dir, staged, dir, name, rustix::fs::RenameFlags::NOREPLACE)
        } else {
            rustix::fs::renameat(dir, staged, dir, name)
        }
        .map_err(|e| errno(e, shown))?;
        rustix::fs::fsync(dir.as_fd()).map_err(|e| errno(e, shown))
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir, staged, AtFlags::empty());
    }
    result
}

// `Stat`'s field types differ between architectures, hence casts that are no-ops on some.
#[allow(clippy::unnecessary_cast)]
fn perm_bits(st: &rustix::fs::Stat) -> u32 {
    st.st_mode as u32 & 0o7777
}

#[allow(clippy::unnecessary_cast)]
fn owner_of(st: &rustix::fs::Stat) -> (u32, u32) {
    (st.st_uid as u32, st.st_gid as u32)
}

#[allow(clippy::unnecessary_cast)]
fn modified_ms(st: &rustix::fs::Stat) -> i64 {
    st.st_mtime as i64 * 1000 + st.st_mtime_nsec as i64 / 1_000_000
}

fn kind_of(t: FileType) -> FileKind {
    match t {
        FileType::RegularFile => FileKind::File,
        FileType::Directory => FileKind::Directory,
        FileType::Symlink => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

/// User and group names from `/etc/passwd` and `/etc/group`.
struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    fn load() -> Names {
        let read = |path: &str| -> HashMap<u32, String> {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let mut f = l.split(':');
                    let name = f.next()?;
                    let id = f.nth(1)?.parse().ok()?;
                    Some((id, name.to_string()))
                })
                .collect()
        };
        Names { users: read("/etc/passwd"), groups: read("/etc/group") }
    }
    fn user(&self, uid: u32) -> String {
        self.users.get(&uid).cloned().unwrap_or_else(|| uid.to_string())
    }
    fn group(&self, gid: u32) -> String {
        self.groups.get(&gid).cloned().unwrap_or_else(|| gid.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// A root `www` (with `site/index.html`) beside a directory it must never reach.
    pub(super) struct Fixture {
        pub(super) _tmp: tempfile::TempDir,
        pub(super) root: PathBuf,
        pub(super) outside: PathBuf,
        pub(super) driver: FilesDriver,
    }

    pub(super) fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("www");
        let outside = tmp.path().join("secret");
        std::fs::create_dir_all(root.join("site")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("passwd"), "secret").unwrap();
        std::fs::write(root.join("site/index.html"), "hello").unwrap();
        let settings = FilesSettings {
            roots: vec![root.clone()],
            read_max_bytes: 1000,
            write_max_bytes: 2000,
            ..Default::default()
        };
        let driver = FilesDriver::new(&settings).unwrap().unwrap();
        Fixture { _tmp: tmp, root, outside, driver }
    }

    fn p(path: &Path) -> String {
        path.display().to_string()
    }

    fn kind(answer: FileAnswer) -> Option<FileErrorKind> {
        match answer {
            FileAnswer::Error(e) => Some(e.kind),
            _ => None,
        }
    }

    fn read(f: &Fixture, path: &str) -> FileAnswer {
        f.driver.handle(FileOp::Read { path: path.into(), offset: 0, max_bytes: u32::MAX })
    }

    fn write(f: &Fixture, path: &str, content: &[u8]) -> FileAnswer {
        f.driver.handle(FileOp::Write(FileWrite {
            path: path.into(),
            content: content.to_vec(),
            create_only: false,
            upload: 0,
            offset: 0,
            finish: true,
        }))
    }

    fn content(answer: FileAnswer) -> Vec<u8> {
        match answer {
            FileAnswer::Content { bytes, .. } => bytes,
            other => panic!("not content: {other:?}"),
        }
    }

    #[test]
    fn no_roots_means_off() {
        assert!(FilesDriver::new(&FilesSettings::default()).unwrap().is_none());
        let relative = FilesSettings { roots: vec!["www".into()], ..FilesSettings::default() };
        assert!(FilesDriver::new(&relative).is_err());
    }

    #[test]
    fn reads_lists_and_relative_paths() {
        let f = fixture();
        assert_eq!(content(read(&f, &p(&f.root.join("site/index.html")))), b"hello");
        assert_eq!(content(read(&f, "site/index.html")), b"hello");
        assert_eq!(content(read(&f, &p(&f.root.join("./site//index.html")))), b"hello");
        match f.driver.handle(FileOp::List { path: p(&f.root), show_hidden: false }) {
            FileAnswer::List { entries } => {
                assert_eq!(entries.len(), 1);
                assert_eq!((entries[0].name.as_str(), entries[0].kind), ("site", FileKind::Directory));
            }
            other => panic!("{other:?}"),
        }
        match f.driver.handle(FileOp::Roots) {
            FileAnswer::Roots { dirs } => assert_eq!(dirs, vec![p(&f.root)]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_escape_is_forbidden() {
        let f = fixture();
        let forbidden = Some(FileErrorKind::Forbidden);
        // `..`, relative and absolute.
        assert_eq!(kind(read(&f, "../secret/passwd")), forbidden);
        assert_eq!(kind(read(&f, &format!("{}/../secret/passwd", p(&f.root)))), forbidden);
        assert_eq!(kind(read(&f, "site/../../secret/passwd")), forbidden);
        // An absolute path elsewhere.
        assert_eq!(kind(read(&f, &p(&f.outside.join("passwd")))), forbidden);
        assert_eq!(kind(read(&f, "/etc/passwd")), forbidden);
        // A symbolic link to a file outside, at the end of the path.
        symlink(f.outside.join("passwd"), f.root.join("link")).unwrap();
        assert_eq!(kind(read(&f, "link")), forbidden);
        assert_eq!(kind(write(&f, "link", b"x")), forbidden);
        // A symbolic link to a directory outside, in the middle of the path.
        symlink(&f.outside, f.root.join("site/out")).unwrap();
        assert_eq!(kind(read(&f, "site/out/passwd")), forbidden);
        assert_eq!(kind(write(&f, "site/out/new", b"x")), forbidden);
        assert_eq!(kind(f.driver.handle(FileOp::List { path: "site/out".into(), show_hidden: true })), forbidden);
        assert!(!f.outside.join("new").exists());
        let create =
            FileOp::Create { parent: "site/out".into(), name: "d".into(), kind: FileKind::Directory, content: vec![] };
        assert_eq!(kind(f.driver.handle(create)), forbidden);
        assert_eq!(
            kind(f.driver.handle(FileOp::Delete { paths: vec!["site/out/passwd".into()], recursive: true })),
            forbidden
        );
        assert!(f.outside.join("passwd").exists());
        // An absolute symbolic link to `/`.
        symlink("/", f.root.join("slash")).unwrap();
        assert_eq!(kind(read(&f, "slash/etc/passwd")), forbidden);
        // A device through a symbolic link.
        symlink("/dev/null", f.root.join("null")).unwrap();
        assert_eq!(kind(read(&f, "null")), forbidden);
        assert_eq!(kind(write(&f, "null", b"x")), forbidden);
        // The root itself cannot be deleted.
        assert_eq!(kind(f.driver.handle(FileOp::Delete { paths: vec![p(&f.root)], recursive: true })), forbidden);
        // Deleting the link removes the link, not what it points at.
        assert_eq!(
            f.driver.handle(FileOp::Delete { paths: vec!["site/out".into()], recursive: true }),
            FileAnswer::Done
        );
        assert!(f.outside.join("passwd").exists());
    }

    #[test]
    fn relative_links_inside_the_root_are_followed() {
        let f = fixture();
        symlink("site/index.html", f.root.join("alias")).unwrap();
        symlink("site", f.root.join("dir-alias")).unwrap();
        symlink("../index.html", f.root.join("site/up")).unwrap();
        assert_eq!(content(read(&f, "alias")), b"hello");
        assert_eq!(content(read(&f, "dir-alias/index.html")), b"hello");
        std::fs::write(f.root.join("index.html"), "top").unwrap();
        assert_eq!(content(read(&f, "site/up")), b"top");
        // A link with an absolute target is refused even when the target is inside.
        symlink(f.root.join("site/index.html"), f.root.join("absolute")).unwrap();
        assert_eq!(kind(read(&f, "absolute")), Some(FileErrorKind::Forbidden));
    }

    #[test]
    fn fifos_and_sockets_are_forbidden_and_do_not_block() {
        let f = fixture();
        rustix::fs::mknodat(rustix::fs::CWD, f.root.join("fifo"), FileType::Fifo, Mode::from_raw_mode(0o644), 0)
            .unwrap();
        assert_eq!(kind(read(&f, "fifo")), Some(FileErrorKind::Forbidden));
        assert_eq!(kind(write(&f, "fifo", b"x")), Some(FileErrorKind::Forbidden));
        let _sock = std::os::unix::net::UnixListener::bind(f.root.join("sock")).unwrap();
        assert_eq!(kind(read(&f, "sock")), Some(FileErrorKind::Forbidden));
        match f.driver.handle(FileOp::List { path: String::new(), show_hidden: false }) {
            FileAnswer::List { entries } => {
                assert!(entries.iter().any(|e| e.name == "fifo" && e.kind == FileKind::Other));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn size_caps() {
        let f = fixture();
        std::fs::write(f.root.join("big"), vec![b'a'; 1001]).unwrap();
        assert_eq!(kind(read(&f, "big")), Some(FileErrorKind::TooLarge));
        assert_eq!(kind(write(&f, "new", &[b'a'; 2001])), Some(FileErrorKind::TooLarge));
        assert!(!f.root.join("new").exists());
        assert_eq!(write(&f, "new", &[b'a'; 2000]), FileAnswer::Done);
    }

    #[test]
    fn binary_round_trip_and_chunked_reads() {
        let f = fixture();
        let bytes: Vec<u8> = (0..=255u8).chain([0xff, 0xfe, 0]).collect();
        assert_eq!(write(&f, "bin", &bytes), FileAnswer::Done);
        assert_eq!(content(read(&f, "bin")), bytes);
        match f.driver.handle(FileOp::Read { path: "bin".into(), offset: 250, max_bytes: 5 }) {
            FileAnswer::Content { bytes: got, size, truncated, .. } => {
                assert_eq!((got.as_slice(), size, truncated), (&bytes[250..255], 259, true));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn atomic_write_keeps_mode_and_leaves_no_staging() {
        let f = fixture();
        let target = f.root.join("site/index.html");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        let inode = std::fs::metadata(&target).unwrap();
        assert_eq!(write(&f, "site/index.html", b"new content"), FileAnswer::Done);
        let after = std::fs::metadata(&target).unwrap();
        assert_eq!(after.permissions().mode() & 0o7777, 0o640);
        assert_ne!(std::os::unix::fs::MetadataExt::ino(&after), std::os::unix::fs::MetadataExt::ino(&inode));
        assert_eq!(std::fs::read(&target).unwrap(), b"new content");
        let names: Vec<_> = std::fs::read_dir(f.root.join("site")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A new file gets 0644.
        assert_eq!(write(&f, "fresh.txt", b"x"), FileAnswer::Done);
        assert_eq!(std::fs::metadata(f.root.join("fresh.txt")).unwrap().permissions().mode() & 0o7777, 0o644);
    }

    #[test]
    fn chunked_writes_commit_on_finish_only() {
        let f = fixture();
        let chunk = |offset: u64, content: &[u8], finish: bool| {
            f.driver.handle(FileOp::Write(FileWrite {
                path: "up.bin".into(),
                content: content.to_vec(),
                create_only: false,
                upload: 42,
                offset,
                finish,
            }))
        };
        assert_eq!(chunk(0, b"abc", false), FileAnswer::Done);
        assert!(!f.root.join("up.bin").exists());
        assert_eq!(kind(chunk(5, b"zz", false)), Some(FileErrorKind::BadInput));
        assert_eq!(chunk(3, b"def", true), FileAnswer::Done);
        assert_eq!(std::fs::read(f.root.join("up.bin")).unwrap(), b"abcdef");
        assert_eq!(std::fs::read_dir(&f.root).unwrap().count(), 2);
    }

    #[test]
    fn create_and_delete() {
        let f = fixture();
        let create = |name: &str, kind: FileKind, content: &[u8]| {
            f.driver.handle(FileOp::Create { parent: p(&f.root), name: name.into(), kind, content: content.to_vec() })
        };
        assert_eq!(create("d", FileKind::Directory, b""), FileAnswer::Done);
        assert_eq!(kind(create("d", FileKind::Directory, b"")), Some(FileErrorKind::Exists));
        assert_eq!(create("a.txt", FileKind::File, b"hi"), FileAnswer::Done);
        assert_eq!(kind(create("a.txt", FileKind::File, b"again")), Some(FileErrorKind::Exists));
        assert_eq!(kind(create("../x", FileKind::File, b"")), Some(FileErrorKind::BadInput));
        assert_eq!(kind(create("..", FileKind::Directory, b"")), Some(FileErrorKind::BadInput));
        assert_eq!(std::fs::read(f.root.join("a.txt")).unwrap(), b"hi");
        assert_eq!(
            write(&f, "d/inner/x", b"x").clone(),
            FileAnswer::Error(err(FileErrorKind::NotFound, "d/inner/x: no such file or directory",))
        );
        assert_eq!(write(&f, "d/x", b"x"), FileAnswer::Done);
        let delete = |paths: &[&str], recursive| {
            f.driver.handle(FileOp::Delete { paths: paths.iter().map(|s| s.to_string()).collect(), recursive })
        };
        assert_eq!(kind(delete(&["d"], false)), Some(FileErrorKind::Exists));
        assert_eq!(kind(delete(&["a.txt", "missing"], true)), Some(FileErrorKind::NotFound));
        assert!(f.root.join("a.txt").exists(), "nothing is removed when one path fails its check");
        assert_eq!(delete(&["a.txt", "d"], true), FileAnswer::Done);
        assert!(!f.root.join("a.txt").exists() && !f.root.join("d").exists());
    }
}
