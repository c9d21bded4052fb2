//! The keeper: fds and blobs kept across client connections (the node
//! plugin restarting), the same file handed back, hostile frames refused
//! without harming other clients, the socket's placement rules, and the
//! `secretfs keeper` process stopping on SIGTERM. Pipes play the
//! `/dev/fuse` fds, so no root is needed (except for the other-uid test,
//! skipped without it).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use secretfs::node::keeper::{
    KeeperClient, KeeperError, KeeperServer, KeeperStopper, Kept, MAX_FRAME, MAX_KEY,
};
use zeroize::Zeroizing;

/// A keeper served on a thread of the test, on a socket in a temporary
/// directory.
struct Keeper {
    dir: tempfile::TempDir,
    path: PathBuf,
    stopper: KeeperStopper,
    thread: Option<JoinHandle<Result<usize, KeeperError>>>,
}

impl Keeper {
    fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap())
    }

    fn start_in(dir: tempfile::TempDir) -> Self {
        let path = dir.path().join("keeper.sock");
        Self::start_at(dir, path)
    }

    fn start_at(dir: tempfile::TempDir, path: PathBuf) -> Self {
        let server = KeeperServer::bind(&path).unwrap();
        let stopper = server.stopper();
        let thread = std::thread::spawn(move || server.serve());
        Self {
            dir,
            path,
            stopper,
            thread: Some(thread),
        }
    }

    fn client(&self) -> KeeperClient {
        KeeperClient::connect(&self.path).unwrap()
    }

    /// Stops the keeper; how many entries it released.
    fn stop(mut self) -> usize {
        self.stopper.stop();
        self.thread.take().unwrap().join().unwrap().unwrap()
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stopper.stop();
            let _ = thread.join();
        }
    }
}

/// Writes `data` through `fd` and reads it back from `reader`: `fd` is a
/// write end of the same pipe.
fn same_pipe(fd: &OwnedFd, reader: &mut impl Read, data: &[u8]) {
    let mut writer = File::from(fd.try_clone().unwrap());
    writer.write_all(data).unwrap();
    let mut got = vec![0u8; data.len()];
    reader.read_exact(&mut got).unwrap();
    assert_eq!(got, data);
}

/// Reading `reader` ends: every write end is closed, the keeper's too.
fn assert_closed(reader: &mut impl Read) {
    let mut buf = [0u8; 1];
    assert_eq!(
        reader.read(&mut buf).unwrap(),
        0,
        "a write end is still open"
    );
}

fn keys(kept: &[Kept]) -> Vec<&str> {
    kept.iter().map(|k| k.key.as_str()).collect()
}

#[test]
fn put_list_replace_remove() {
    let keeper = Keeper::start();
    let mut client = keeper.client();
    let (mut reader, writer) = std::io::pipe().unwrap();
    client
        .put("vol-a", Some(writer.as_fd()), b"state one")
        .unwrap();
    // From here only the keeper holds the write end.
    drop(writer);

    let kept = client.list().unwrap();
    assert_eq!(keys(&kept), ["vol-a"]);
    assert_eq!(&kept[0].blob[..], b"state one");
    same_pipe(&kept[0].fd, &mut reader, b"through the kept fd");
    drop(kept);

    // Without an fd: the fd stays, the blob is replaced.
    client.put("vol-a", None, b"state two, longer").unwrap();
    let kept = client.list().unwrap();
    assert_eq!(keys(&kept), ["vol-a"]);
    assert_eq!(&kept[0].blob[..], b"state two, longer");
    same_pipe(&kept[0].fd, &mut reader, b"still the same pipe");
    drop(kept);

    client.remove("vol-a").unwrap();
    assert!(client.list().unwrap().is_empty());
    // The keeper closed its fd: nothing writes to the pipe any more.
    assert_closed(&mut reader);
    // Removing an unknown key is fine.
    client.remove("vol-a").unwrap();
    assert_eq!(keeper.stop(), 0);
}

#[test]
fn a_new_fd_replaces_and_closes_the_old_one() {
    let keeper = Keeper::start();
    let mut client = keeper.client();
    let (mut old_reader, old_writer) = std::io::pipe().unwrap();
    let (mut new_reader, new_writer) = std::io::pipe().unwrap();
    client.put("vol", Some(old_writer.as_fd()), b"1").unwrap();
    drop(old_writer);
    client.put("vol", Some(new_writer.as_fd()), b"2").unwrap();
    drop(new_writer);
    assert_closed(&mut old_reader);
    let kept = client.list().unwrap();
    assert_eq!(&kept[0].blob[..], b"2");
    same_pipe(&kept[0].fd, &mut new_reader, b"new");
}

#[test]
fn entries_survive_the_client_and_the_next_one_sees_them() {
    let keeper = Keeper::start();
    let (mut reader_b, writer_b) = std::io::pipe().unwrap();
    let (mut reader_a, writer_a) = std::io::pipe().unwrap();
    {
        // The node plugin before its restart.
        let mut node = keeper.client();
        node.put("pod-b/vol", Some(writer_b.as_fd()), &[0xb; 3000])
            .unwrap();
        node.put("pod-a/vol", Some(writer_a.as_fd()), b"").unwrap();
    }
    drop((writer_a, writer_b));

    // After the restart.
    let mut node = keeper.client();
    let kept = node.list().unwrap();
    assert_eq!(keys(&kept), ["pod-a/vol", "pod-b/vol"], "sorted by key");
    assert!(kept[0].blob.is_empty());
    assert_eq!(&kept[1].blob[..], &[0xb; 3000][..]);
    same_pipe(&kept[0].fd, &mut reader_a, b"a");
    same_pipe(&kept[1].fd, &mut reader_b, b"b");
    drop(kept);

    // Stopping the keeper releases both (and closes its fds).
    assert_eq!(keeper.stop(), 2);
    assert_closed(&mut reader_a);
    assert_closed(&mut reader_b);
}

#[test]
fn put_without_fd_for_an_unknown_key_is_refused_by_name() {
    let keeper = Keeper::start();
    let mut client = keeper.client();
    let err = client.put("never-put", None, b"x").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other);
    assert!(err.to_string().contains("\"never-put\""), "{err}");
    // A refusal leaves the connection usable.
    assert!(client.list().unwrap().is_empty());
}

#[test]
fn the_client_checks_its_limits() {
    let keeper = Keeper::start();
    let mut client = keeper.client();
    let (_reader, writer) = std::io::pipe().unwrap();
    let long = "k".repeat(MAX_KEY + 1);
    let err = client.put(&long, Some(writer.as_fd()), b"").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let err = client.put("", Some(writer.as_fd()), b"").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let huge = vec![0u8; MAX_FRAME];
    let err = client.put("vol", Some(writer.as_fd()), &huge).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("64 MiB frame limit"), "{err}");
    // Nothing was sent: the connection is still in step.
    let key = "k".repeat(MAX_KEY);
    client.put(&key, Some(writer.as_fd()), b"max key").unwrap();
    assert_eq!(keys(&client.list().unwrap()), [key.as_str()]);
}

#[test]
fn the_largest_blob_fits_and_comes_back_whole() {
    let keeper = Keeper::start();
    let mut client = keeper.client();
    let (_reader, writer) = std::io::pipe().unwrap();
    // op, key field, fd flag, blob field: exactly MAX_FRAME.
    let blob: Vec<u8> = (0..MAX_FRAME - (1 + 4 + 3 + 1 + 4))
        .map(|i| (i % 251) as u8)
        .collect();
    client.put("vol", Some(writer.as_fd()), &blob).unwrap();
    let kept = client.list().unwrap();
    assert_eq!(kept[0].blob.len(), blob.len());
    assert!(kept[0].blob[..] == blob[..]);
    assert_eq!(kept[0].blob.capacity(), blob.len(), "allocated at its size");
}

/// A frame as a hostile or broken client would write it.
fn frame(op: u8, body: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(body.len() + 1)
        .unwrap()
        .to_le_bytes()
        .to_vec();
    out.push(op);
    out.extend_from_slice(body);
    out
}

fn field(bytes: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(bytes.len()).unwrap().to_le_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// What the keeper answers `bytes` before closing: the message of its ERR
/// frame, or `None` if it closed without one. The connection must be
/// closed afterwards.
fn hostile(keeper: &Keeper, bytes: &[u8]) -> Option<String> {
    let mut stream = UnixStream::connect(&keeper.path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The keeper may close before reading everything.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the keeper did not close the connection: {e}"),
    }
    if answer.is_empty() {
        return None;
    }
    assert!(answer.len() >= 9, "{answer:?}");
    assert_eq!(answer[4], 0x83, "an ERR frame: {answer:?}");
    Some(String::from_utf8(answer[9..].to_vec()).unwrap())
}

#[test]
fn hostile_frames_are_refused_and_others_are_still_served() {
    let keeper = Keeper::start();
    let mut node = keeper.client();
    let (_reader, writer) = std::io::pipe().unwrap();
    node.put("vol", Some(writer.as_fd()), b"kept").unwrap();

    // A 1 GiB LIST.
    let oversized = hostile(&keeper, &[0, 0, 0, 64, 3]).unwrap();
    assert!(oversized.contains("over the 64 MiB limit"), "{oversized}");
    let garbage = hostile(&keeper, b"GET / HTTP/1.1\r\nHost: keeper\r\n\r\n").unwrap();
    assert!(garbage.contains("limit"), "{garbage}");
    let empty = hostile(&keeper, &[0, 0, 0, 0, 3]).unwrap();
    assert!(empty.contains("empty frame"), "{empty}");
    let unknown = hostile(&keeper, &frame(0x7f, b"")).unwrap();
    assert!(unknown.contains("unknown op"), "{unknown}");
    let answer_op = hostile(&keeper, &frame(0x80, b"")).unwrap();
    assert!(answer_op.contains("not a request"), "{answer_op}");
    let past_end = hostile(&keeper, &frame(0x02, &[200, 0, 0, 0, b'k'])).unwrap();
    assert!(past_end.contains("past the end"), "{past_end}");
    let long_key = hostile(&keeper, &frame(0x02, &field(&[b'k'; 5000]))).unwrap();
    assert!(long_key.contains("key of 5000 bytes"), "{long_key}");
    let not_utf8 = hostile(&keeper, &frame(0x02, &field(&[0xff, 0xfe]))).unwrap();
    assert!(not_utf8.contains("not UTF-8"), "{not_utf8}");
    let trailing = hostile(&keeper, &frame(0x03, b"xyz")).unwrap();
    assert!(trailing.contains("3 unexpected byte(s)"), "{trailing}");
    let mut no_fd = field(b"vol");
    no_fd.push(1);
    no_fd.extend(field(b"blob"));
    let announced = hostile(&keeper, &frame(0x01, &no_fd)).unwrap();
    assert!(announced.contains("none arrived"), "{announced}");
    let mut bad_flag = field(b"vol");
    bad_flag.push(7);
    bad_flag.extend(field(b"blob"));
    let flag = hostile(&keeper, &frame(0x01, &bad_flag)).unwrap();
    assert!(flag.contains("not 0 or 1"), "{flag}");
    // Closed in the middle of a header, then of a body.
    assert_eq!(hostile(&keeper, &[9, 0]), None);
    assert_eq!(hostile(&keeper, &[20, 0, 0, 0, 1, 3, 0]), None);

    // None of it touched the kept entry or the first connection.
    let kept = node.list().unwrap();
    assert_eq!(keys(&kept), ["vol"]);
    assert_eq!(&kept[0].blob[..], b"kept");
    assert_eq!(keeper.client().list().unwrap().len(), 1);
}

/// Sends `bytes` with `fds` attached, as a client that does not follow
/// the rules would.
fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    let sent = sendmsg(
        stream,
        &[std::io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();
    assert_eq!(sent, bytes.len());
}

#[test]
fn fds_on_refused_frames_are_closed_not_kept() {
    let keeper = Keeper::start();
    let (mut reader, writer) = std::io::pipe().unwrap();
    let (mut reader2, writer2) = std::io::pipe().unwrap();
    let mut put = field(b"vol");
    put.push(1);
    put.extend(field(b"blob"));
    for (bytes, fds, expected) in [
        // Two fds on one PUT.
        (
            frame(0x01, &put),
            vec![writer.as_fd(), writer2.as_fd()],
            "at most one fd",
        ),
        // An fd on a LIST.
        (frame(0x03, b""), vec![writer.as_fd()], "only PUT may"),
    ] {
        let mut stream = UnixStream::connect(&keeper.path).unwrap();
        send_with_fds(&stream, &bytes, &fds);
        let mut answer = Vec::new();
        // The keeper closes without reading the rest: a reset after ERR.
        if let Err(e) = stream.read_to_end(&mut answer) {
            assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
        }
        let message = String::from_utf8_lossy(&answer);
        assert!(message.contains(expected), "{message}");
    }
    drop((writer, writer2));
    assert_closed(&mut reader);
    assert_closed(&mut reader2);
    assert!(keeper.client().list().unwrap().is_empty());
}

#[test]
fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keeper.sock");
    // A keeper that died: its socket file stays, nobody listens.
    drop(UnixListener::bind(&path).unwrap());
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket()
    );
    let keeper = Keeper::start_at(dir, path);
    assert!(keeper.client().list().unwrap().is_empty());
}

#[test]
fn a_live_keeper_is_not_replaced() {
    let keeper = Keeper::start();
    let err = KeeperServer::bind(&keeper.path).unwrap_err();
    assert!(matches!(err, KeeperError::AlreadyRunning { .. }), "{err}");
    assert!(err.to_string().contains(&*keeper.path.to_string_lossy()));
    // The first keeper still serves.
    assert!(keeper.client().list().unwrap().is_empty());
}

#[test]
fn a_file_that_is_not_a_socket_is_refused_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keeper.sock");
    std::fs::write(&path, b"not a socket").unwrap();
    let err = KeeperServer::bind(&path).unwrap_err();
    assert!(matches!(err, KeeperError::NotASocket { .. }), "{err}");
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket", "left alone");
}

#[test]
fn the_directory_is_created_private_and_the_socket_is_0600() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("run/secretfs");
    let path = parent.join("keeper.sock");
    let keeper = Keeper::start_at(dir, path.clone());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&parent), 0o700);
    assert_eq!(mode(&path), 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["keeper.sock"], "no temporary socket left");
    assert!(keeper.client().list().unwrap().is_empty());
}

#[test]
fn kept_debug_shows_no_blob_byte() {
    let (_reader, writer) = std::io::pipe().unwrap();
    let kept = Kept {
        key: "vol".into(),
        fd: writer.into(),
        blob: Zeroizing::new(b"hunter2-s3cr3t".to_vec()),
    };
    let debug = format!("{kept:?}");
    assert!(debug.contains("14 bytes"), "{debug}");
    assert!(!debug.contains("hunter2"), "{debug}");
    // Nor as a list of numbers (`[104, 117, …]`).
    assert!(!debug.contains("104, 117"), "{debug}");
}

/// Runs in a child process as uid 65534 (see
/// `another_uid_is_refused`); does nothing otherwise.
#[test]
fn child_connects_as_another_uid() {
    let Some(path) = std::env::var_os("SECRETFS_KEEPER_TEST_SOCKET") else {
        return;
    };
    let mut client = KeeperClient::connect(Path::new(&path)).expect("the socket is reachable");
    let err = client
        .list()
        .expect_err("the keeper must not answer uid 65534");
    assert!(!err.to_string().contains("refused LIST"), "{err}");
}

#[test]
fn another_uid_is_refused() {
    use std::os::unix::process::CommandExt;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: switching to another uid needs root");
        return;
    }
    // Under /tmp, which every uid can traverse ($TMPDIR may not be).
    let keeper = Keeper::start_in(tempfile::tempdir_in("/tmp").unwrap());
    let (_reader, writer) = std::io::pipe().unwrap();
    keeper
        .client()
        .put("vol", Some(writer.as_fd()), b"secret")
        .unwrap();
    // Open the file permissions: only the peer uid check stands between
    // uid 65534 and the keeper.
    std::fs::set_permissions(keeper.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&keeper.path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "keeper::child_connects_as_another_uid",
            "--nocapture",
        ])
        .env("SECRETFS_KEEPER_TEST_SOCKET", &keeper.path)
        .uid(65534)
        .gid(65534)
        .output();
    let output = match output {
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            eprintln!("skipped: uid 65534 cannot run the test binary ({e})");
            return;
        }
        output => output.unwrap(),
    };
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 passed"));
    assert_eq!(keys(&keeper.client().list().unwrap()), ["vol"]);
}

/// The chart runs the keeper and the node plugin in two pods: each is in a
/// PID namespace where the other is invisible, and SO_PEERCRED reports the
/// peer's pid as 0. The keeper must still serve a peer of its uid (found on
/// the real cluster, `scripts/k8s-e2e.sh`: it refused every connection, and
/// every volume died with the node plugin). Here the keeper runs in a PID
/// namespace of its own, where this test process does not exist.
#[test]
fn a_peer_outside_the_keepers_pid_namespace_is_served() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: a new PID namespace needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keeper.sock");
    let mut child = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "--"])
        .arg(env!("CARGO_BIN_EXE_secretfs"))
        .args(["--log", "info", "keeper", "--socket"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "the keeper did not start");
        assert!(child.try_wait().unwrap().is_none(), "the keeper exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_reader, writer) = std::io::pipe().unwrap();
    let served = KeeperClient::connect(&path).and_then(|mut client| {
        client.put("vol", Some(writer.as_fd()), b"secret")?;
        client.list()
    });
    // The keeper is PID 1 of its namespace, the child of `unshare`: stop it
    // by its own pid (unshare does not pass SIGTERM on).
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap();
    let keeper_pid: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let pid = rustix::process::Pid::from_raw(keeper_pid).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let kept = served.unwrap_or_else(|e| panic!("the keeper refused its own uid: {e}\n{stderr}"));
    assert_eq!(keys(&kept), ["vol"]);
    assert!(!stderr.contains("refused a connection"), "{stderr}");
}

#[test]
fn the_keeper_command_stops_on_sigterm_and_says_what_it_released() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keeper.sock");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_secretfs"))
        .args(["--log", "info", "keeper", "--socket"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut client = loop {
        match KeeperClient::connect(&path) {
            Ok(client) => break client,
            Err(e) => {
                assert!(Instant::now() < deadline, "the keeper did not start: {e}");
                assert!(child.try_wait().unwrap().is_none(), "the keeper exited");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let (mut reader, writer) = std::io::pipe().unwrap();
    client
        .put("vol", Some(writer.as_fd()), b"do-not-log-me")
        .unwrap();
    drop((writer, client));
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("keeper started"), "{stderr}");
    assert!(
        stderr.contains("1 volume connection(s) released"),
        "{stderr}"
    );
    assert!(!stderr.contains("do-not-log-me"), "{stderr}");
    assert_closed(&mut reader);
}
