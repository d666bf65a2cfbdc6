//! Files on a node (`FILE_OP`): listing, reading, writing, creating and deleting inside the
//! directories the agent's `[files] roots` allow, never outside them.
//!
//! Paths are absolute host paths under one of the roots (`/srv/www/site/index.php`) or relative to
//! the first root. Contents are raw bytes; a file larger than one frame travels in chunks
//! (`Read`'s `offset`, `FileWrite`'s `upload`). Refusals are answered as
//! [`FileAnswer::Error`] with a [`FileErrorKind`] the controller maps to an HTTP status.

use serde::{Deserialize, Serialize};

/// Largest content carried by one `FILE_OP` request or answer (well under the frame cap).
pub const CHUNK: usize = 2 * 1024 * 1024;

/// What a directory entry is (`lstat`: a symbolic link is reported as one, not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    /// A device, FIFO or socket: listed, never read or written.
    Other,
}

impl FileKind {
    /// The API's `type` (`file`, `directory`, `symlink`, `other`).
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Other => "other",
        }
    }
}

/// A write, whole or in chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileWrite {
    pub path: String,
    pub content: Vec<u8>,
    /// Refuse (`Exists`) when the file is already there.
    pub create_only: bool,
    /// 0: `content` is the whole file. Otherwise an id the controller picked for a chunked write:
    /// chunks arrive in order (`offset` = bytes sent before) into a staged file that replaces the
    /// target when `finish` is set.
    pub upload: u64,
    pub offset: u64,
    pub finish: bool,
}

/// `FILE_OP` body (request kind 29).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileOp {
    /// The configured roots. Answer: [`FileAnswer::Roots`].
    Roots,
    /// A directory's entries. Answer: [`FileAnswer::List`].
    List { path: String, show_hidden: bool },
    /// At most `max_bytes` (capped at [`CHUNK`]) of a regular file from `offset`. Answer:
    /// [`FileAnswer::Content`].
    Read { path: String, offset: u64, max_bytes: u32 },
    /// Replace (or create) a regular file atomically, keeping its mode. Answer: `Done`.
    Write(FileWrite),
    /// A new file (with `content`) or directory `name` in `parent`. Answer: `Done`.
    Create { parent: String, name: String, kind: FileKind, content: Vec<u8> },
    /// Remove entries (a symbolic link itself, never its target); a non-empty directory only
    /// with `recursive`. Answer: `Done`.
    Delete { paths: Vec<String>, recursive: bool },
    /// Move entries into their root's trash (a rename, never a copy). Every path is checked
    /// before any is moved. Answer: [`FileAnswer::Trashed`].
    Trash { paths: Vec<String> },
    /// The trash of every root, newest first; `page` from 1, `limit` entries a page. Answer:
    /// [`FileAnswer::TrashList`].
    TrashList { page: u32, limit: u32 },
    /// Count and bytes in the trash, per root. Answer: [`FileAnswer::TrashStats`].
    TrashStats,
    /// Put a trashed entry back where it was (`Conflict` when something is there now). Answer:
    /// [`FileAnswer::Restored`].
    TrashRestore { id: String },
    /// Remove one trashed entry for good. Answer: [`FileAnswer::TrashRemoved`].
    TrashDelete { id: String },
    /// Remove everything in every root's trash for good. Answer: [`FileAnswer::TrashRemoved`].
    TrashEmpty,
}

/// An entry in a root's trash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashEntry {
    /// 32 lower-case hex digits (128 random bits).
    pub id: String,
    /// The root it was in, as configured.
    pub root: String,
    /// Where it was (and goes back to): the root joined with its path inside.
    pub original_path: String,
    pub kind: FileKind,
    /// Bytes; a directory's is the sum of what is inside, counted up to a bound (a lower bound
    /// for very large trees).
    pub size: u64,
    /// When it was trashed, Unix milliseconds.
    pub deleted_ms: i64,
}

/// The trash of one root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashRootStats {
    pub root: String,
    pub count: u64,
    pub bytes: u64,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (`0o644`), without the file type.
    pub mode: u32,
    /// User and group names (the numeric id when the host has no name for it).
    pub owner: String,
    pub group: String,
    /// Last modification, Unix milliseconds.
    pub modified_ms: i64,
}

/// Why a file operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileErrorKind {
    /// Outside the roots (`..`, another absolute path, a symbolic link leading out), a device,
    /// FIFO or socket, or no permission: 403.
    Forbidden,
    /// 404.
    NotFound,
    /// A malformed path or name, not a directory, a chunk out of order: 400.
    BadInput,
    /// Already exists, or a directory is not empty: 409.
    Exists,
    /// Over the agent's read or write cap: 413.
    TooLarge,
    /// Anything else (I/O): 500.
    Failed,
    /// The operation cannot be done as things stand (a restore whose original path is taken,
    /// a trash across filesystems): 409.
    Conflict,
}

/// A refusal with what to tell the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileError {
    pub kind: FileErrorKind,
    pub message: String,
}

/// `FILE_OP` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileAnswer {
    Roots {
        dirs: Vec<String>,
    },
    List {
        entries: Vec<FileEntry>,
    },
    /// `bytes` from the requested offset; `size` is the whole file's, `truncated` says more
    /// follows this chunk.
    Content {
        bytes: Vec<u8>,
        size: u64,
        truncated: bool,
        modified_ms: i64,
    },
    Done,
    Error(FileError),
    /// What `Trash` moved, in the order asked.
    Trashed {
        entries: Vec<TrashEntry>,
    },
    /// One page of the trash; `total` counts every entry.
    TrashList {
        entries: Vec<TrashEntry>,
        total: u64,
    },
    /// Per root, in the order of the roots.
    TrashStats {
        roots: Vec<TrashRootStats>,
    },
    /// The entry put back (its `original_path` is where it is now).
    Restored(TrashEntry),
    /// What `TrashDelete` or `TrashEmpty` removed for good.
    TrashRemoved {
        count: u64,
        bytes: u64,
    },
}
