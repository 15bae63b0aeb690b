//! The lazy file system through a real FUSE mount: what survives a power cut is exactly what
//! was made durable (fsync of the file for data and size, fsync of the directory for names).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use mllpd_lazyfs::LazyMount;

/// A backing directory, a mountpoint, and the mount; `None` (with the reason printed) when FUSE
/// is missing outside CI.
fn mounted() -> Option<(tempfile::TempDir, tempfile::TempDir, LazyMount)> {
    if let Err(reason) = mllpd_lazyfs::available() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI must run the lazyfs tests: {reason}");
        }
        eprintln!("SKIP: {reason}");
        return None;
    }
    let backing = tempfile::tempdir().expect("backing");
    let mountpoint = tempfile::tempdir().expect("mountpoint");
    let mount = LazyMount::mount(backing.path(), mountpoint.path()).expect("mount");
    Some((backing, mountpoint, mount))
}

fn sync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync dir");
}

fn read(path: &Path) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    File::open(path).ok()?.read_to_end(&mut out).ok()?;
    Some(out)
}

#[test]
fn only_what_was_synced_survives_a_power_cut() {
    let Some((backing, mnt, mount)) = mounted() else {
        return;
    };
    let m = mnt.path();
    std::fs::create_dir(m.join("dir")).expect("mkdir");
    let mut synced = File::create(m.join("dir/synced")).expect("create");
    synced.write_all(b"durable").expect("write");
    synced.sync_data().expect("fdatasync");
    synced
        .write_all(b" and lost")
        .expect("write after the sync");
    let mut unsynced = File::create(m.join("dir/unsynced")).expect("create");
    unsynced.write_all(b"lost").expect("write");
    sync_dir(&m.join("dir"));
    sync_dir(m);
    std::fs::create_dir(m.join("dir/new")).expect("mkdir after the dir sync");
    File::create(m.join("orphan")).expect("create in an unsynced root");
    assert_eq!(
        read(&m.join("dir/synced")).as_deref(),
        Some(&b"durable and lost"[..])
    );
    assert_eq!(
        read(&backing.path().join("dir/synced")).as_deref(),
        Some(&b"durable"[..]),
        "the backing file holds only the synced bytes"
    );

    let loss = mount.power_off();
    assert!(
        synced.write_all(b"x").is_err(),
        "every request fails once the power is off"
    );
    drop((synced, unsynced));
    mount.unmount().expect("unmount");
    assert_eq!(loss.files, 2, "{loss:?}");
    assert_eq!(loss.entries, 2, "dir/new and orphan: {loss:?}");

    let remounted = LazyMount::mount(backing.path(), m).expect("remount");
    assert_eq!(
        read(&m.join("dir/synced")).as_deref(),
        Some(&b"durable"[..])
    );
    assert_eq!(read(&m.join("dir/unsynced")).as_deref(), Some(&b""[..]));
    assert!(!m.join("dir/new").exists());
    assert!(!m.join("orphan").exists());
    remounted.unmount().expect("unmount");
}

#[test]
fn an_unsynced_truncation_is_undone_and_a_clean_unmount_keeps_everything() {
    let Some((backing, mnt, mount)) = mounted() else {
        return;
    };
    let m = mnt.path();
    let path = m.join("file");
    let mut file = File::create(&path).expect("create");
    file.write_all(&[5u8; 10_000]).expect("write");
    file.sync_all().expect("fsync");
    drop(file);
    sync_dir(m);
    let file = OpenOptions::new().write(true).open(&path).expect("open");
    file.set_len(100).expect("truncate");
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 100);
    drop(file);
    mount.power_off();
    mount.unmount().expect("unmount");

    let remounted = LazyMount::mount(backing.path(), m).expect("remount");
    assert_eq!(
        read(&path),
        Some(vec![5u8; 10_000]),
        "the cut undid the truncation"
    );
    let mut file = OpenOptions::new().append(true).open(&path).expect("open");
    file.write_all(b"tail").expect("append");
    drop(file);
    File::create(m.join("late")).expect("create");
    remounted.unmount().expect("clean unmount syncs");
    let mut expected = vec![5u8; 10_000];
    expected.extend_from_slice(b"tail");
    assert_eq!(read(&backing.path().join("file")), Some(expected));
    assert!(backing.path().join("late").exists());
}
