//! The trash of each root: `<root>/.flotilla-trash/<id>/` holds the trashed entry as `entry`
//! and a small record `meta.json` (its path relative to the root, kind, size, when).
//!
//! Trashing is one `renameat` from the entry's directory (opened confined, like every other
//! operation) into a fresh slot, so it is atomic and never copies; an entry on another filesystem
//! than its root (a mount inside the root) cannot be renamed and is refused (`Conflict`: delete it
//! for good instead). The trash directory and the slots are opened with `O_NOFOLLOW` from the
//! root's descriptor, so a link planted in their place is refused, and nothing inside a slot is
//! ever followed: sizes are counted and slots removed with `lstat`/`O_NOFOLLOW` relative to
//! directory descriptors. A restore recreates missing parents (confined) and renames back with
//! `RENAME_NOREPLACE`, so it never replaces what now occupies the path (`Conflict`).
//!
//! The record is written before the rename: a crash in between leaves a slot without `entry`,
//! which listings skip and emptying removes.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use flotilla_protocol::files::{FileErrorKind, FileKind, TrashEntry, TrashRootStats};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use super::{bad, empty_dir, err, errno, forbidden, kind_of, stage, FileResult, FilesDriver, Located};

/// The trash directory in each root.
pub(super) const TRASH_DIR: &str = ".flotilla-trash";
/// The trashed entry in its slot.
const ENTRY: &str = "entry";
/// The slot's record.
const META: &str = "meta.json";
/// Largest record read back (a path and a few numbers).
const META_MAX: u64 = 64 * 1024;
/// Most directory entries visited to size one trashed directory; past it the size is a lower
/// bound.
const SIZE_WALK_MAX: u64 = 100_000;
/// Deepest directory level visited when sizing.
const SIZE_WALK_DEPTH: u32 = 256;

/// `meta.json` of a slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    /// Relative to the root, no `..`.
    path: String,
    kind: FileKind,
    size: u64,
    deleted_ms: i64,
}

fn nofollow_dir() -> OFlags {
    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// A fresh id: 128 random bits in lower-case hex.
fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn is_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn not_found(id: &str) -> super::FileError {
    err(FileErrorKind::NotFound, format!("no trash entry {id}"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

#[allow(clippy::unnecessary_cast)]
fn size_of(st: &rustix::fs::Stat) -> u64 {
    st.st_size as u64
}

fn file_type(st: &rustix::fs::Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode as _)
}

/// Bytes under `dir` (what is not a directory counts its `lstat` size), visiting at most
/// `budget` entries and [`SIZE_WALK_DEPTH`] levels; links are not followed.
fn tree_size(dir: &OwnedFd, budget: &mut u64, depth: u32) -> u64 {
    let Ok(entries) = rustix::fs::Dir::read_from(dir) else { return 0 };
    let mut total = 0u64;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        let name = OsStr::from_bytes(name);
        let Ok(st) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else { continue };
        if file_type(&st) == FileType::Directory {
            if depth < SIZE_WALK_DEPTH {
                if let Ok(sub) = rustix::fs::openat(dir, name, nofollow_dir(), Mode::empty()) {
                    total = total.saturating_add(tree_size(&sub, budget, depth + 1));
                }
            }
        } else {
            total = total.saturating_add(size_of(&st));
        }
    }
    total
}

/// Removes the slot `id` of `trash` with everything in it (nothing followed).
fn remove_slot(trash: &OwnedFd, id: &OsStr, shown: &str) -> FileResult<()> {
    let slot = rustix::fs::openat(trash, id, nofollow_dir(), Mode::empty()).map_err(|e| errno(e, shown))?;
    empty_dir(&slot, shown)?;
    rustix::fs::unlinkat(trash, id, AtFlags::REMOVEDIR).map_err(|e| errno(e, shown))?;
    Ok(())
}

/// Reads a slot's record; `None` when it is missing or not one of ours.
fn read_meta(slot: &OwnedFd) -> Option<Meta> {
    let fd = rustix::fs::openat(
        slot,
        META,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    if file_type(&st) != FileType::RegularFile || size_of(&st) > META_MAX {
        return None;
    }
    let mut text = vec![];
    std::fs::File::from(fd).take(META_MAX).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}

/// A record's path, checked again (it is read from disk): relative, no `..`, not in the trash.
fn meta_rel(meta: &Meta) -> Option<PathBuf> {
    let p = Path::new(&meta.path);
    let ok = !meta.path.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && p.components().next() != Some(Component::Normal(OsStr::new(TRASH_DIR)));
    ok.then(|| p.to_path_buf())
}

impl FilesDriver {
    /// The trash directory of root `root`, created (0700) when `create`; `None` when there is
    /// none. A link or a file in its place is refused.
    fn trash_dir(&self, root: usize, create: bool) -> FileResult<Option<OwnedFd>> {
        let shown = self.roots[root].shown.join(TRASH_DIR).display().to_string();
        let root_fd = self.root_fd(root)?;
        let refused = |e: Errno| match e {
            Errno::LOOP | Errno::NOTDIR => {
                forbidden(format!("{shown}: not a directory (a link or a file); move it away"))
            }
            other => errno(other, &shown),
        };
        match rustix::fs::openat(&root_fd, TRASH_DIR, nofollow_dir(), Mode::empty()) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&root_fd, TRASH_DIR, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(errno(e, &shown)),
                }
                rustix::fs::openat(&root_fd, TRASH_DIR, nofollow_dir(), Mode::empty()).map(Some).map_err(refused)
            }
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(refused(e)),
        }
    }

    fn trash_entry(&self, root: usize, id: &str, meta: &Meta) -> TrashEntry {
        let shown = &self.roots[root].shown;
        TrashEntry {
            id: id.to_string(),
            root: shown.display().to_string(),
            original_path: shown.join(&meta.path).display().to_string(),
            kind: meta.kind,
            size: meta.size,
            deleted_ms: meta.deleted_ms,
        }
    }

    /// Every complete slot of root `root`'s trash: (id, record). Entries kept longer than
    /// `[files] trash_days` are removed for good on the way (so the trash expires whenever it is
    /// used, without a timer of its own).
    fn slots(&self, root: usize) -> FileResult<Vec<(String, Meta)>> {
        let Some(trash) = self.trash_dir(root, false)? else { return Ok(vec![]) };
        let expired_before = self.trash_keep_ms.map(|keep| now_ms() - keep);
        let mut found = vec![];
        for entry in rustix::fs::Dir::read_from(&trash).map_err(|e| errno(e, TRASH_DIR))?.filter_map(Result::ok) {
            let Ok(id) = std::str::from_utf8(entry.file_name().to_bytes()) else { continue };
            if !is_id(id) {
                continue;
            }
            let Ok(slot) = rustix::fs::openat(&trash, id, nofollow_dir(), Mode::empty()) else { continue };
            let complete = rustix::fs::statat(&slot, ENTRY, AtFlags::SYMLINK_NOFOLLOW).is_ok();
            if let Some(meta) = read_meta(&slot).filter(|_| complete) {
                if expired_before.is_some_and(|before| meta.deleted_ms < before) {
                    drop(slot);
                    match remove_slot(&trash, OsStr::new(id), id) {
                        Ok(()) => tracing::info!(id, path = %meta.path, "trash entry expired and removed"),
                        Err(e) => tracing::warn!(id, error = %e.message, "expired trash entry not removed"),
                    }
                    continue;
                }
                found.push((id.to_string(), meta));
            }
        }
        Ok(found)
    }

    /// The slot `id`: its root, the trash and slot directories, its record.
    fn find_slot(&self, id: &str) -> FileResult<(usize, OwnedFd, OwnedFd, Meta)> {
        if !is_id(id) {
            return Err(not_found(id));
        }
        for root in 0..self.roots.len() {
            let Some(trash) = self.trash_dir(root, false)? else { continue };
            match rustix::fs::openat(&trash, id, nofollow_dir(), Mode::empty()) {
                Ok(slot) => {
                    let meta = read_meta(&slot).ok_or_else(|| not_found(id))?;
                    return Ok((root, trash, slot, meta));
                }
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(errno(e, id)),
            }
        }
        Err(not_found(id))
    }

    /// Moves `paths` into their roots' trash; every path is checked before any is moved.
    pub(super) fn trash(&self, paths: &[String]) -> FileResult<Vec<TrashEntry>> {
        if paths.is_empty() {
            return Err(bad("no path to move to the trash"));
        }
        if self.trash_keep_ms.is_some() {
            for root in 0..self.roots.len() {
                self.slots(root)?;
            }
        }
        let targets = self.existing_entries(paths)?;
        targets.iter().map(|(at, dir)| self.trash_one(at, dir)).collect()
    }

    fn trash_one(&self, at: &Located, dir: &OwnedFd) -> FileResult<TrashEntry> {
        let name = at.split().expect("checked by parent_dir").1;
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| errno(e, &at.shown))?;
        let kind = kind_of(file_type(&st));
        let size = if kind == FileKind::Directory {
            let sub = rustix::fs::openat(dir, name, nofollow_dir(), Mode::empty()).map_err(|e| errno(e, &at.shown))?;
            let mut budget = SIZE_WALK_MAX;
            tree_size(&sub, &mut budget, 0)
        } else {
            size_of(&st)
        };
        let path = at.rel.to_str().ok_or_else(|| bad(format!("{}: not UTF-8", at.shown)))?.to_string();
        let meta = Meta { path, kind, size, deleted_ms: now_ms() };
        let trash = self.trash_dir(at.root, true)?.expect("created");
        let id = new_id();
        rustix::fs::mkdirat(&trash, id.as_str(), Mode::from_raw_mode(0o700)).map_err(|e| errno(e, &at.shown))?;
        let result = (|| {
            let slot = rustix::fs::openat(&trash, id.as_str(), nofollow_dir(), Mode::empty())
                .map_err(|e| errno(e, &at.shown))?;
            let record = serde_json::to_vec(&meta).map_err(|e| err(FileErrorKind::Failed, e.to_string()))?;
            let staged = stage(&slot, OsStr::new(META), &record, &at.shown)?;
            rustix::fs::renameat(&slot, staged.as_str(), &slot, META).map_err(|e| errno(e, &at.shown))?;
            rustix::fs::renameat(dir, name, &slot, ENTRY).map_err(|e| match e {
                Errno::XDEV => err(
                    FileErrorKind::Conflict,
                    format!(
                        "{}: on another filesystem than the trash of {}; delete it for good (permanent: true)",
                        at.shown,
                        self.roots[at.root].shown.display()
                    ),
                ),
                other => errno(other, &at.shown),
            })?;
            for fd in [&slot, &trash, dir] {
                rustix::fs::fsync(fd).map_err(|e| errno(e, &at.shown))?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = remove_slot(&trash, OsStr::new(&id), &at.shown);
            return Err(e);
        }
        Ok(self.trash_entry(at.root, &id, &meta))
    }

    /// Every root's trash, newest first; `page` from 1.
    pub(super) fn trash_list(&self, page: u32, limit: u32) -> FileResult<(Vec<TrashEntry>, u64)> {
        let mut all = vec![];
        for root in 0..self.roots.len() {
            all.extend(self.slots(root)?.into_iter().map(|(id, meta)| self.trash_entry(root, &id, &meta)));
        }
        all.sort_by(|a, b| b.deleted_ms.cmp(&a.deleted_ms).then_with(|| a.id.cmp(&b.id)));
        let total = all.len() as u64;
        let limit = limit.max(1) as usize;
        let skip = (page.max(1) as usize - 1).saturating_mul(limit);
        Ok((all.into_iter().skip(skip).take(limit).collect(), total))
    }

    pub(super) fn trash_stats(&self) -> FileResult<Vec<TrashRootStats>> {
        (0..self.roots.len())
            .map(|root| {
                let slots = self.slots(root)?;
                Ok(TrashRootStats {
                    root: self.roots[root].shown.display().to_string(),
                    count: slots.len() as u64,
                    bytes: slots.iter().fold(0u64, |sum, (_, m)| sum.saturating_add(m.size)),
                })
            })
            .collect()
    }

    /// Opens (creating what is missing, 0755) the directory `rel` beneath `at`'s root.
    fn make_dirs(&self, at: &Located, rel: &Path) -> FileResult<OwnedFd> {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY;
        match self.open(at, rel, flags, Mode::empty()) {
            Err(e) if e.kind == FileErrorKind::NotFound => {}
            other => return other,
        }
        let mut done = PathBuf::new();
        for part in rel.components() {
            let next = done.join(part);
            match self.open(at, &next, flags, Mode::empty()) {
                Ok(_) => {}
                Err(e) if e.kind == FileErrorKind::NotFound => {
                    let parent = self.open(at, &done, flags, Mode::empty())?;
                    match rustix::fs::mkdirat(&parent, part.as_os_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(errno(e, &at.shown)),
                    }
                }
                Err(e) => return Err(e),
            }
            done = next;
        }
        self.open(at, rel, flags, Mode::empty())
    }

    /// Puts `id` back at its original path, never replacing anything there.
    pub(super) fn trash_restore(&self, id: &str) -> FileResult<TrashEntry> {
        let (root, trash, slot, meta) = self.find_slot(id)?;
        rustix::fs::statat(&slot, ENTRY, AtFlags::SYMLINK_NOFOLLOW).map_err(|_| not_found(id))?;
        let entry = self.trash_entry(root, id, &meta);
        let rel =
            meta_rel(&meta).ok_or_else(|| forbidden(format!("trash entry {id}: its record names no valid path")))?;
        let at = Located { root, rel, shown: entry.original_path.clone() };
        let (parent, name) = at.split().expect("a record's path is not empty");
        let dir = self.make_dirs(&at, &parent)?;
        let taken =
            || err(FileErrorKind::Conflict, format!("{}: something is there now; move it away first", at.shown));
        if rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            return Err(taken());
        }
        match rustix::fs::renameat_with(&slot, ENTRY, &dir, name, rustix::fs::RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(Errno::EXIST | Errno::NOTEMPTY) => return Err(taken()),
            // A filesystem without RENAME_NOREPLACE: checked just above.
            Err(Errno::INVAL) => rustix::fs::renameat(&slot, ENTRY, &dir, name).map_err(|e| errno(e, &at.shown))?,
            Err(e) => return Err(errno(e, &at.shown)),
        }
        rustix::fs::fsync(&dir).map_err(|e| errno(e, &at.shown))?;
        let _ = remove_slot(&trash, OsStr::new(id), id);
        let _ = rustix::fs::fsync(&trash);
        Ok(entry)
    }

    /// Removes `id` for good: (1, its bytes).
    pub(super) fn trash_delete(&self, id: &str) -> FileResult<(u64, u64)> {
        let (_, trash, _, meta) = self.find_slot(id)?;
        remove_slot(&trash, OsStr::new(id), id)?;
        Ok((1, meta.size))
    }

    /// Empties every root's trash (also slots left incomplete by a crash): (entries, bytes).
    pub(super) fn trash_empty(&self) -> FileResult<(u64, u64)> {
        let (mut count, mut bytes) = (0u64, 0u64);
        for root in 0..self.roots.len() {
            let Some(trash) = self.trash_dir(root, false)? else { continue };
            let names: Vec<Vec<u8>> = rustix::fs::Dir::read_from(&trash)
                .map_err(|e| errno(e, TRASH_DIR))?
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_bytes().to_vec())
                .filter(|n| n != b"." && n != b"..")
                .collect();
            for name in names {
                let name = OsStr::from_bytes(&name);
                let shown = name.to_string_lossy();
                let st = rustix::fs::statat(&trash, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| errno(e, &shown))?;
                if file_type(&st) != FileType::Directory {
                    rustix::fs::unlinkat(&trash, name, AtFlags::empty()).map_err(|e| errno(e, &shown))?;
                    continue;
                }
                let slot =
                    rustix::fs::openat(&trash, name, nofollow_dir(), Mode::empty()).map_err(|e| errno(e, &shown))?;
                if let Some(meta) = read_meta(&slot) {
                    if rustix::fs::statat(&slot, ENTRY, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                        count += 1;
                        bytes = bytes.saturating_add(meta.size);
                    }
                }
                remove_slot(&trash, name, &shown)?;
            }
            rustix::fs::fsync(&trash).map_err(|e| errno(e, TRASH_DIR))?;
        }
        Ok((count, bytes))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use flotilla_protocol::files::{FileAnswer, FileOp, FileWrite};

    use super::super::tests::Fixture;
    use super::super::FilesSettings;
    use super::*;

    /// The files driver's fixture, with `site/css/a.css` too.
    fn fixture() -> Fixture {
        let f = super::super::tests::fixture();
        std::fs::create_dir_all(f.root.join("site/css")).unwrap();
        std::fs::write(f.root.join("site/css/a.css"), "body{}").unwrap();
        f
    }

    fn kind(answer: FileAnswer) -> Option<FileErrorKind> {
        match answer {
            FileAnswer::Error(e) => Some(e.kind),
            _ => None,
        }
    }

    fn trash(f: &Fixture, paths: &[&str]) -> Vec<TrashEntry> {
        match f.driver.handle(FileOp::Trash { paths: paths.iter().map(|p| p.to_string()).collect() }) {
            FileAnswer::Trashed { entries } => entries,
            other => panic!("{other:?}"),
        }
    }

    fn list(f: &Fixture, page: u32, limit: u32) -> (Vec<TrashEntry>, u64) {
        match f.driver.handle(FileOp::TrashList { page, limit }) {
            FileAnswer::TrashList { entries, total } => (entries, total),
            other => panic!("{other:?}"),
        }
    }

    fn stats(f: &Fixture) -> (u64, u64) {
        match f.driver.handle(FileOp::TrashStats) {
            FileAnswer::TrashStats { roots } => (roots[0].count, roots[0].bytes),
            other => panic!("{other:?}"),
        }
    }

    fn names(f: &Fixture, path: &str, show_hidden: bool) -> Vec<String> {
        match f.driver.handle(FileOp::List { path: path.into(), show_hidden }) {
            FileAnswer::List { entries } => entries.into_iter().map(|e| e.name).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn trash_list_restore_round_trip() {
        let f = fixture();
        let moved = trash(&f, &["site/index.html", "site/css"]);
        assert_eq!(moved.len(), 2);
        assert!(moved.iter().all(|e| is_id(&e.id)) && moved[0].id != moved[1].id);
        assert_eq!(moved[0].original_path, f.root.join("site/index.html").display().to_string());
        assert_eq!((moved[0].kind, moved[0].size), (FileKind::File, 5));
        assert_eq!((moved[1].kind, moved[1].size), (FileKind::Directory, 6), "a directory counts what is inside");
        assert!(!f.root.join("site/index.html").exists() && !f.root.join("site/css").exists());
        // Renamed, not copied: the inode is the one in the trash.
        assert!(f.root.join(TRASH_DIR).join(&moved[0].id).join(ENTRY).is_file());

        let (entries, total) = list(&f, 1, 10);
        assert_eq!(total, 2);
        assert!(entries[0].deleted_ms >= entries[1].deleted_ms, "newest first");
        let (page2, _) = list(&f, 2, 1);
        assert_eq!(page2.len(), 1);
        assert_ne!(page2[0].id, list(&f, 1, 1).0[0].id);
        assert!(list(&f, 3, 1).0.is_empty());
        assert_eq!(stats(&f), (2, 11));

        // Restore recreates missing parents.
        std::fs::remove_dir_all(f.root.join("site")).unwrap();
        match f.driver.handle(FileOp::TrashRestore { id: moved[1].id.clone() }) {
            FileAnswer::Restored(e) => assert_eq!(e.original_path, moved[1].original_path),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read_to_string(f.root.join("site/css/a.css")).unwrap(), "body{}");
        assert_eq!(
            f.driver.handle(FileOp::TrashRestore { id: moved[0].id.clone() }),
            FileAnswer::Restored(moved[0].clone())
        );
        assert_eq!(std::fs::read_to_string(f.root.join("site/index.html")).unwrap(), "hello");
        assert_eq!(list(&f, 1, 10).1, 0);
        assert_eq!(std::fs::read_dir(f.root.join(TRASH_DIR)).unwrap().count(), 0, "slots are removed");
        // Gone now, and ids that are not ids: not found.
        for id in [moved[0].id.as_str(), "nope", "../../etc", &"A".repeat(32), ""] {
            assert_eq!(kind(f.driver.handle(FileOp::TrashRestore { id: id.into() })), Some(FileErrorKind::NotFound));
            assert_eq!(kind(f.driver.handle(FileOp::TrashDelete { id: id.into() })), Some(FileErrorKind::NotFound));
        }
    }

    #[test]
    fn restore_refuses_an_occupied_path() {
        let f = fixture();
        let id = trash(&f, &["site/index.html"])[0].id.clone();
        std::fs::write(f.root.join("site/index.html"), "newer").unwrap();
        let restore = || f.driver.handle(FileOp::TrashRestore { id: id.clone() });
        assert_eq!(kind(restore()), Some(FileErrorKind::Conflict));
        assert_eq!(std::fs::read_to_string(f.root.join("site/index.html")).unwrap(), "newer", "not replaced");
        // A dangling link occupies the path too.
        std::fs::remove_file(f.root.join("site/index.html")).unwrap();
        symlink("missing", f.root.join("site/index.html")).unwrap();
        assert_eq!(kind(restore()), Some(FileErrorKind::Conflict));
        assert_eq!(list(&f, 1, 10).1, 1, "still in the trash");
        std::fs::remove_file(f.root.join("site/index.html")).unwrap();
        assert!(matches!(restore(), FileAnswer::Restored(_)));
        assert_eq!(std::fs::read_to_string(f.root.join("site/index.html")).unwrap(), "hello");
    }

    #[test]
    fn links_in_the_trash_are_never_followed() {
        let f = fixture();
        // A directory holding a link out, and a link out on its own.
        symlink(&f.outside, f.root.join("site/out")).unwrap();
        symlink(f.outside.join("passwd"), f.root.join("pw")).unwrap();
        let moved = trash(&f, &["site", "pw"]);
        assert_eq!(moved[1].kind, FileKind::Symlink);
        assert_eq!(moved[0].size, 5 + 6 + f.outside.as_os_str().len() as u64, "the link counts itself, not its target");
        assert_eq!(
            f.driver.handle(FileOp::TrashDelete { id: moved[0].id.clone() }),
            FileAnswer::TrashRemoved { count: 1, bytes: moved[0].size }
        );
        assert_eq!(std::fs::read_to_string(f.outside.join("passwd")).unwrap(), "secret");
        // The link itself comes back, still a link.
        assert!(matches!(f.driver.handle(FileOp::TrashRestore { id: moved[1].id.clone() }), FileAnswer::Restored(_)));
        assert!(std::fs::symlink_metadata(f.root.join("pw")).unwrap().file_type().is_symlink());
        // A link planted in place of the trash directory is refused, not followed.
        std::fs::remove_dir(f.root.join(TRASH_DIR)).unwrap();
        symlink(&f.outside, f.root.join(TRASH_DIR)).unwrap();
        std::fs::write(f.root.join("x"), "x").unwrap();
        assert_eq!(kind(f.driver.handle(FileOp::Trash { paths: vec!["x".into()] })), Some(FileErrorKind::Forbidden));
        assert_eq!(kind(f.driver.handle(FileOp::TrashEmpty)), Some(FileErrorKind::Forbidden));
        assert!(f.root.join("x").exists());
        assert_eq!(std::fs::read_dir(&f.outside).unwrap().count(), 1);
        // A slot whose record was edited to leave the root is refused.
        std::fs::remove_file(f.root.join(TRASH_DIR)).unwrap();
        let id = trash(&f, &["x"])[0].id.clone();
        let meta = f.root.join(TRASH_DIR).join(&id).join(META);
        let edited = std::fs::read_to_string(&meta).unwrap().replace("\"x\"", "\"../secret/x\"");
        std::fs::write(&meta, edited).unwrap();
        assert_eq!(kind(f.driver.handle(FileOp::TrashRestore { id })), Some(FileErrorKind::Forbidden));
        assert!(!f.outside.join("x").exists());
    }

    #[test]
    fn the_trash_is_hidden_and_refused_to_ordinary_operations() {
        let f = fixture();
        let id = trash(&f, &["site/index.html"])[0].id.clone();
        let root = f.root.display().to_string();
        assert!(!names(&f, &root, true).contains(&TRASH_DIR.to_string()));
        assert!(!names(&f, "", true).contains(&TRASH_DIR.to_string()));
        let inside = format!("{root}/{TRASH_DIR}/{id}/{ENTRY}");
        let forbidden = Some(FileErrorKind::Forbidden);
        for path in
            [inside.clone(), format!("{TRASH_DIR}/{id}/{ENTRY}"), format!("{root}/./{TRASH_DIR}"), TRASH_DIR.into()]
        {
            let read = FileOp::Read { path: path.clone(), offset: 0, max_bytes: 100 };
            assert_eq!(kind(f.driver.handle(read)), forbidden, "read {path}");
            let write = FileOp::Write(FileWrite {
                path: path.clone(),
                content: b"x".to_vec(),
                create_only: false,
                upload: 0,
                offset: 0,
                finish: true,
            });
            assert_eq!(kind(f.driver.handle(write)), forbidden, "write {path}");
            assert_eq!(kind(f.driver.handle(FileOp::Delete { paths: vec![path.clone()], recursive: true })), forbidden);
            assert_eq!(kind(f.driver.handle(FileOp::Trash { paths: vec![path.clone()] })), forbidden);
            assert_eq!(kind(f.driver.handle(FileOp::List { path: path.clone(), show_hidden: true })), forbidden);
        }
        let create =
            FileOp::Create { parent: root.clone(), name: TRASH_DIR.into(), kind: FileKind::Directory, content: vec![] };
        assert_eq!(kind(f.driver.handle(create)), forbidden);
        // Through a link inside the root: the kernel resolves it into the trash, which is refused.
        symlink(TRASH_DIR, f.root.join("t")).unwrap();
        assert_eq!(kind(f.driver.handle(FileOp::List { path: "t".into(), show_hidden: true })), forbidden);
        let read = FileOp::Read { path: format!("t/{id}/{ENTRY}"), offset: 0, max_bytes: 100 };
        assert_eq!(kind(f.driver.handle(read)), forbidden);
        assert_eq!(
            kind(f.driver.handle(FileOp::Delete { paths: vec![format!("t/{id}")], recursive: true })),
            forbidden
        );
        assert_eq!(list(&f, 1, 10).1, 1, "untouched");
    }

    #[test]
    fn empty_removes_everything_for_good() {
        let f = fixture();
        trash(&f, &["site/index.html"]);
        trash(&f, &["site/css"]);
        // A slot left without its entry by a crash is not listed, and goes with the rest.
        std::fs::create_dir(f.root.join(TRASH_DIR).join(new_id())).unwrap();
        assert_eq!(list(&f, 1, 10).1, 2);
        assert_eq!(f.driver.handle(FileOp::TrashEmpty), FileAnswer::TrashRemoved { count: 2, bytes: 11 });
        assert_eq!(std::fs::read_dir(f.root.join(TRASH_DIR)).unwrap().count(), 0);
        assert_eq!(stats(&f), (0, 0));
        assert_eq!(f.driver.handle(FileOp::TrashEmpty), FileAnswer::TrashRemoved { count: 0, bytes: 0 });
        assert!(f.root.join("site").is_dir(), "only the trash is emptied");
        // Every path is checked before any is moved.
        std::fs::write(f.root.join("a"), "a").unwrap();
        let answer = f.driver.handle(FileOp::Trash { paths: vec!["a".into(), "missing".into()] });
        assert_eq!(kind(answer), Some(FileErrorKind::NotFound));
        assert!(f.root.join("a").exists());
    }

    #[test]
    fn entries_older_than_trash_days_are_removed_when_the_trash_is_next_used() {
        let f = fixture();
        let kept = trash(&f, &["site/index.html"]);
        let old = trash(&f, &["site/css/a.css"]);
        // Age the second entry's record past the 30 days kept by default.
        let slot = f.root.join(TRASH_DIR).join(&old[0].id);
        let mut meta: Meta = serde_json::from_slice(&std::fs::read(slot.join(META)).unwrap()).unwrap();
        meta.deleted_ms -= 31 * 86_400_000;
        std::fs::write(slot.join(META), serde_json::to_vec(&meta).unwrap()).unwrap();
        let (entries, total) = list(&f, 1, 10);
        assert_eq!(total, 1);
        assert_eq!(entries[0].id, kept[0].id);
        assert!(!slot.exists(), "the expired entry is gone for good");
        // trash_days = 0 keeps entries until emptied.
        let settings = FilesSettings { roots: vec![f.root.clone()], trash_days: 0, ..Default::default() };
        let forever = FilesDriver::new(&settings).unwrap().unwrap();
        let slot = f.root.join(TRASH_DIR).join(&kept[0].id);
        let mut meta: Meta = serde_json::from_slice(&std::fs::read(slot.join(META)).unwrap()).unwrap();
        meta.deleted_ms -= 365 * 86_400_000;
        std::fs::write(slot.join(META), serde_json::to_vec(&meta).unwrap()).unwrap();
        assert_eq!(forever.trash_list(1, 10).unwrap().1, 1);
    }
}
