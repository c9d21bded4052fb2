//! The fuser `Filesystem` implementation: a thin translation layer over
//! [`FsCore`]. Every decision about behaviour lives in the core; every
//! decision about the kernel protocol lives here.
//!
//! Kernel protocol choices (verified against `fs/fuse/file.c` and by
//! measurement, see docs/BENCHMARKS.md):
//! - In `ReadMode::PageCache` (the default), OPEN answers `ENOSYS`: the
//!   kernel then stops sending OPEN and RELEASE for the life of the mount
//!   and treats every open as `FOPEN_KEEP_CACHE`, so a warm open+read+close
//!   never leaves the kernel. Each version of a file is an inode of its own
//!   whose bytes never change (see `tree/versions.rs`), so those cached
//!   pages are never torn by a rotation. In `ReadMode::Atomic`, OPEN answers
//!   `FOPEN_DIRECT_IO`: every read comes here and is answered from one
//!   version.
//! - FORGET and BATCH_FORGET tell the core which older versions the kernel
//!   let go: their bytes are dropped.
//! - A volume with an open observer (`MountOptions::audit`, opt-in) answers
//!   OPEN in page-cache mode with `FOPEN_KEEP_CACHE` (reads stay in the
//!   page cache; each open costs one round trip) and reports each first
//!   open of a version by a process (`audit.rs`); in atomic mode it keeps
//!   `FOPEN_DIRECT_IO`. RELEASE is answered by fuser's default (ok).
//! - OPENDIR answers `ENOSYS` in both modes (listings are cached with
//!   `FOPEN_CACHE_DIR` and invalidated on change).
//! - FLUSH answers `ENOSYS`: the kernel stops sending it on close.
//! - xattr requests answer `ENOSYS` once and are never asked again.
//! - `FUSE_AUTO_INVAL_DATA` is requested: after an invalidation every read,
//!   whatever its length, revalidates the attributes first (see the core's
//!   notes on torn reads).
//! - Requests whose answer needs a load (a lazy file's first access) are
//!   finished on the async runtime; all others are answered inline.

use std::ffi::OsStr;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use futures::FutureExt;
use tokio::runtime::Handle;

use crate::config::{CachePolicy, MountOptions, ReadMode};
use crate::core::{Attr, FsCore, Kind};
use crate::error::FsError;

pub(crate) struct FuseAdapter {
    core: Arc<FsCore>,
    runtime: Handle,
    cache: CachePolicy,
    read_mode: ReadMode,
    audit: Option<(crate::audit::OpenAudit, crate::audit::SeenOpens)>,
}

impl FuseAdapter {
    pub(crate) fn new(core: Arc<FsCore>, runtime: Handle, options: &MountOptions) -> Self {
        Self {
            core,
            runtime,
            cache: options.cache,
            read_mode: options.read_mode,
            audit: options
                .audit
                .clone()
                .map(|audit| (audit, crate::audit::SeenOpens::default())),
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
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Nothing is ever written; this only sizes the kernel's requests
        // (max_pages follows it): reads of at most 128 KiB, whose answers
        // fit the relay's socket pair (see relay.rs).
        let _ = config.set_max_write(crate::relay::MAX_READ as u32);
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_AUTO_INVAL_DATA) {
            tracing::warn!(
                ?missing,
                "kernel lacks FUSE_AUTO_INVAL_DATA: rotated files may be read stale"
            );
        }
        // Linux 6.6+: let programs mmap files opened with FOPEN_DIRECT_IO.
        // Asked in both modes, so the INIT answer does not depend on the
        // mode: a process in either mode can take over a mount made in the
        // other (the kernel keeps the answer it got first).
        if config
            .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_err()
            && self.read_mode == ReadMode::Atomic
        {
            tracing::info!("kernel older than 6.6: mmap of secret files is refused");
        }
        Ok(())
    }

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

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.forget(ino.0, nlookup);
    }

    // BATCH_FORGET: fuser's default calls `forget` for each inode.

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

    fn open(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let Some((audit, seen)) = &self.audit else {
            match self.read_mode {
                ReadMode::PageCache => reply.error(Errno::ENOSYS),
                ReadMode::Atomic => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            }
            return;
        };
        // Reported before the answer: the opener is still in open(2), so
        // its /proc entry can be read.
        let tid = req.pid();
        if let Some(pid) = seen.first(tid, ino.0)
            && let Some((path, current)) = self.core.version_of(ino.0)
        {
            audit.0.first_open(crate::audit::OpenEvent {
                pid,
                tid,
                uid: req.uid(),
                gid: req.gid(),
                ino: ino.0,
                path,
                current,
            });
        }
        match self.read_mode {
            ReadMode::PageCache => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            ReadMode::Atomic => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
        }
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
