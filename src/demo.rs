//! `secretfs demo`: a volume like the seed example's, on this machine.
//!
//! It mounts a secretfs volume holding the seed's `SECRET_1`, shows it the
//! way a container would (`ls -la`, `cat`), rotates the value in place and
//! shows it again at the same path, then unmounts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use secretfs_fuse::{
    Content, FileSpec, MountError, MountOptions, MountedVolume, SecretBytes, VolumeError, VolumeId,
    VolumeSpec,
};
use thiserror::Error;

use crate::cli::DemoArgs;

/// Why the demo stopped.
#[derive(Debug, Error)]
pub enum DemoError {
    #[error("the demo mounts a FUSE file system: run it as root on a machine with /dev/fuse")]
    NotPrivileged,
    #[error("cannot prepare the mount directory {path:?}: {source}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("cannot run {program}: {source}")]
    Command {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

const FS_GROUP: u32 = 2000;

fn show(step: &str, program: &str, args: &[&Path]) -> Result<(), DemoError> {
    println!(
        "\n$ {program} {}   # {step}",
        args.iter()
            .map(|a| a.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| DemoError::Command {
            program: program.to_owned(),
            source,
        })?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.stdout.ends_with(b"\n") {
        println!();
    }
    Ok(())
}

/// Runs the demo; see the module docs.
pub fn run(args: &DemoArgs) -> Result<(), DemoError> {
    if !rustix::process::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        return Err(DemoError::NotPrivileged);
    }
    let runtime = tokio::runtime::Runtime::new().map_err(DemoError::Runtime)?;
    let temp;
    let target = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("secretfs-demo-")
                .tempdir()
                .map_err(|source| DemoError::Directory {
                    path: std::env::temp_dir(),
                    source,
                })?;
            temp.path().join("secrets-store")
        }
    };
    std::fs::create_dir_all(&target).map_err(|source| DemoError::Directory {
        path: target.clone(),
        source,
    })?;

    let spec = VolumeSpec {
        id: VolumeId::new("demo"),
        dir_uid: 0,
        dir_gid: FS_GROUP,
        files: vec![
            FileSpec::new(
                "SECRET_1",
                0o640,
                0,
                FS_GROUP,
                Content::bytes(&b"s3cr3t-from-kv-demo\n"[..]),
            )
            .map_err(|e| MountError::Tree(e.into()))?,
        ],
    };
    let mounted = MountedVolume::mount(
        spec,
        &target,
        &MountOptions::default(),
        runtime.handle().clone(),
    )?;
    println!("mounted a secretfs volume at {}", target.display());
    let secret = target.join("SECRET_1");
    show(
        "the pod's view: one file per vault object, group = fsGroup 2000",
        "ls",
        &[Path::new("-la"), &target],
    )?;
    show("its contents", "cat", &[&secret])?;
    mounted.volume().replace(
        "SECRET_1",
        Arc::new(SecretBytes::from_slice(b"rotated-value-v2\n")),
    )?;
    println!("\n(a new version was written: the file changes in place, no remount)");
    show("same path, new contents", "cat", &[&secret])?;

    if args.keep {
        println!(
            "\nthe volume stays mounted at {}; press Ctrl-C to unmount and exit",
            target.display()
        );
        runtime.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
    }
    mounted.unmount()?;
    println!("\nunmounted {}", target.display());
    Ok(())
}
