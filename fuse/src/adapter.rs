//! The fuser `Filesystem` implementation: a thin translation layer over
//! [`FsCore`]. Every decision about behaviour lives in the core; every
//! decision about the kernel protocol lives here.
//!
//! Kernel protocol choices (verified against `fs/fuse/file.c` and by
//! measurement, see docs/BENCHMARKS.md):
//! - OPEN and OPENDIR answer `ENOSYS`. The kernel then stops sending them
//!   (and RELEASE/RELEASEDIR) for the life of the mount and treats every
//!   open as `FOPEN_KEEP_CACHE` (directories also `FOPEN_CACHE_DIR`), so a
//!   warm open+read+close never leaves the kernel.
//! - FLUSH answers `ENOSYS`: the kernel stops sending it on close.
//! - xattr requests answer `ENOSYS` once and are never asked again.
//! - Requests whose answer needs a load (a lazy file's first access) are
//!   finished on the async runtime; all others are answered inline.

use std::ffi::OsStr;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyXattr, Request,
};
use futures::FutureExt;
use tokio::runtime::Handle;

use crate::config::CachePolicy;
use crate::core::{Attr, FsCore, Kind};
use crate::error::FsError;

pub(crate) struct FuseAdapter {
    core: Arc<FsCore>,
    runtime: Handle,
    cache: CachePolicy,
}

impl FuseAdapter {
    pub(crate) fn new(core: Arc<FsCore>, runtime: Handle, cache: CachePolicy) -> Self {
        Self {
            core,
            runtime,
            cache,
        }
    }

    /// Polls `work` once here; if it is not done (a load is under way), it
    /// finishes on the runtime and `done` replies from there.
    fn complete<T, F>(&self, work: F, done: impl FnOnce(T) + Send + 'static)
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let _context = self.runtime.enter();
        let mut work = Box::pin(work);
        match (&mut work).now_or_never() {
            Some(value) => done(value),
            None => {
                self.runtime.spawn(async move { done(work.await) });
            }
        }
    }
}

fn errno(err: &FsError) -> Errno {
    Errno::from_i32(err.errno())
}

fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.mtime,
        crtime: attr.crtime,
        kind: match attr.kind {
            Kind::Directory => FileType::Directory,
            Kind::File => FileType::RegularFile,
        },
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for FuseAdapter {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        // Every name in a volume is UTF-8; anything else cannot exist.
        let Some(name) = name.to_str().map(str::to_owned) else {
            reply.error(Errno::ENOENT);
            return;
        };
        let core = self.core.clone();
        let cache = self.cache;
        self.complete(
            async move { core.lookup(parent.0, &name).await },
            move |result| match result {
                Ok(attr) => reply.entry_with_ttls(
                    &cache.attr_ttl,
                    &cache.entry_ttl,
                    &file_attr(&attr),
                    Generation(attr.generation),
                ),
                Err(err) => reply.error(errno(&err)),
            },
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let core = self.core.clone();
        let ttl: Duration = self.cache.attr_ttl;
        self.complete(
            async move { core.getattr(ino.0).await },
            move |result| match result {
                Ok(attr) => reply.attr(&ttl, &file_attr(&attr)),
                Err(err) => reply.error(errno(&err)),
            },
        );
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let core = self.core.clone();
        self.complete(
            async move { core.read(ino.0, offset, size).await },
            move |result| match result {
                Ok(data) => reply.data(data.as_slice()),
                Err(err) => reply.error(errno(&err)),
            },
        );
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.core.readdir(ino.0, offset) {
            Ok(entries) => {
                for entry in entries {
                    let kind = match entry.kind {
                        Kind::Directory => FileType::Directory,
                        Kind::File => FileType::RegularFile,
                    };
                    if reply.add(INodeNo(entry.ino), entry.offset, kind, &entry.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(err) => reply.error(errno(&err)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let stat = self.core.statfs();
        reply.statfs(
            stat.blocks,
            0,
            0,
            stat.files,
            0,
            stat.block_size,
            stat.name_len,
            stat.block_size,
        );
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }
}
