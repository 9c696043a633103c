//! cgroup v1 device access: grants, refcounted revokes, hostile cgroup names, v2 detection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{KernelLikeWriter, Tree};
use sriov_vfio::{
    CgroupDevices, CgroupDirProblem, CgroupVersion, DeviceNumber, Error, FileRuleWriter, Revoked,
    detect_version,
};

const VFIO: DeviceNumber = DeviceNumber::new(10, 196);
const GROUP: DeviceNumber = DeviceNumber::new(243, 3);
const POD: &str = "kubepods/besteffort/pod1/ctr1";

fn v1_tree() -> (Tree, std::sync::Arc<KernelLikeWriter>, CgroupDevices) {
    let tree = Tree::new();
    tree.cgroup(POD);
    let writer = KernelLikeWriter::new();
    let cg = CgroupDevices::with_writer(tree.cgroup_root(), writer.clone()).unwrap();
    (tree, writer, cg)
}

#[test]
fn grant_writes_the_rule_to_devices_allow() {
    let (tree, writer, cg) = v1_tree();
    assert_eq!(cg.version(), CgroupVersion::V1);
    assert_eq!(cg.grant(POD, GROUP).unwrap(), 1);
    assert_eq!(
        writer.writes(),
        vec![("devices.allow".to_string(), "c 243:3 rw".to_string())]
    );
    assert!(writer.is_allowed(&tree.cgroup_root().join(POD), GROUP));
}

#[test]
fn revoke_writes_to_devices_deny_not_allow() {
    let (tree, writer, cg) = v1_tree();
    cg.grant(POD, GROUP).unwrap();
    assert_eq!(cg.revoke(POD, GROUP).unwrap(), Revoked::Denied);
    assert_eq!(
        writer.writes()[1],
        ("devices.deny".to_string(), "c 243:3 rw".to_string())
    );
    assert!(!writer.is_allowed(&tree.cgroup_root().join(POD), GROUP));
}

#[test]
fn two_grants_need_two_revokes() {
    let (tree, writer, cg) = v1_tree();
    let dir = tree.cgroup_root().join(POD);
    assert_eq!(cg.grant(POD, VFIO).unwrap(), 1);
    assert_eq!(cg.grant(POD, VFIO).unwrap(), 2);
    assert_eq!(writer.writes().len(), 1, "second grant writes nothing");
    assert_eq!(cg.holders(POD, VFIO), 2);

    assert_eq!(
        cg.revoke(POD, VFIO).unwrap(),
        Revoked::StillHeld { holders: 1 }
    );
    assert!(
        writer.is_allowed(&dir, VFIO),
        "still allowed after the first revoke"
    );
    assert_eq!(cg.revoke(POD, VFIO).unwrap(), Revoked::Denied);
    assert!(!writer.is_allowed(&dir, VFIO));
    assert_eq!(cg.revoke(POD, VFIO).unwrap(), Revoked::NotHeld);
    assert_eq!(writer.writes().len(), 2, "a third revoke writes nothing");
}

#[test]
fn counts_are_per_cgroup_and_per_device() {
    let (tree, writer, cg) = v1_tree();
    let other = "kubepods/besteffort/pod2/ctr1";
    tree.cgroup(other);
    cg.grant(POD, VFIO).unwrap();
    cg.grant(other, VFIO).unwrap();
    cg.grant(POD, GROUP).unwrap();
    assert_eq!(cg.revoke(POD, VFIO).unwrap(), Revoked::Denied);
    assert!(writer.is_allowed(&tree.cgroup_root().join(other), VFIO));
    assert!(writer.is_allowed(&tree.cgroup_root().join(POD), GROUP));
    assert!(!writer.is_allowed(&tree.cgroup_root().join(POD), VFIO));
}

#[test]
fn equivalent_spellings_share_one_count() {
    let (_tree, writer, cg) = v1_tree();
    cg.grant(POD, VFIO).unwrap();
    cg.grant("kubepods//besteffort/./pod1/ctr1/", VFIO).unwrap();
    assert_eq!(writer.writes().len(), 1);
    assert_eq!(cg.holders(POD, VFIO), 2);
}

#[test]
fn revoke_of_a_never_granted_device_writes_nothing() {
    let (_tree, writer, cg) = v1_tree();
    assert_eq!(cg.revoke(POD, GROUP).unwrap(), Revoked::NotHeld);
    assert!(writer.writes().is_empty());
}

#[test]
fn grant_all_undoes_earlier_grants_when_one_fails() {
    let (tree, writer, cg) = v1_tree();
    *writer.fail_rule.lock().unwrap() = Some(GROUP.cgroup_rule());
    let err = cg.grant_all(POD, &[VFIO, GROUP]).unwrap_err();
    assert!(matches!(err, Error::WriteRule { .. }), "{err}");
    assert!(err.to_string().contains("devices.allow"), "{err}");
    assert!(err.to_string().contains("c 243:3 rw"), "{err}");
    assert!(!writer.is_allowed(&tree.cgroup_root().join(POD), VFIO));
    assert_eq!(cg.holders(POD, VFIO), 0);
    assert_eq!(cg.holders(POD, GROUP), 0);
}

#[test]
fn failed_deny_keeps_the_grant_so_a_retry_denies() {
    let (tree, writer, cg) = v1_tree();
    cg.grant(POD, GROUP).unwrap();
    *writer.fail_rule.lock().unwrap() = Some(GROUP.cgroup_rule());
    assert!(cg.revoke(POD, GROUP).is_err());
    assert_eq!(cg.holders(POD, GROUP), 1);
    *writer.fail_rule.lock().unwrap() = None;
    assert_eq!(cg.revoke(POD, GROUP).unwrap(), Revoked::Denied);
    assert!(!writer.is_allowed(&tree.cgroup_root().join(POD), GROUP));
}

#[test]
fn revoke_after_the_pod_cgroup_vanished_forgets_the_grant() {
    let (tree, writer, cg) = v1_tree();
    cg.grant(POD, GROUP).unwrap();
    std::fs::remove_dir_all(tree.cgroup_root().join(POD)).unwrap();
    assert_eq!(cg.revoke(POD, GROUP).unwrap(), Revoked::CgroupGone);
    assert_eq!(
        writer.writes().len(),
        1,
        "nothing to write into a removed cgroup"
    );
    // A new pod reusing the name starts from zero.
    tree.cgroup(POD);
    assert_eq!(cg.grant(POD, GROUP).unwrap(), 1);
}

#[test]
fn hostile_cgroup_names_are_refused_before_any_write() {
    let (tree, writer, cg) = v1_tree();
    // Make every "escape" target real, so only validation can stop it.
    tree.cgroup("x");
    let long_component = "a".repeat(4096);
    let long_path = vec!["a"; 600].join("/");
    let cases: Vec<(&str, CgroupDirProblem)> = vec![
        ("../x", CgroupDirProblem::ParentComponent),
        ("kubepods/../../x", CgroupDirProblem::ParentComponent),
        ("kubepods/..", CgroupDirProblem::ParentComponent),
        ("/kubepods/besteffort/pod1/ctr1", CgroupDirProblem::Absolute),
        ("/", CgroupDirProblem::Absolute),
        ("", CgroupDirProblem::Empty),
        (".", CgroupDirProblem::Empty),
        ("./", CgroupDirProblem::Empty),
        ("kubepods\0/x", CgroupDirProblem::Nul),
        (&long_component, CgroupDirProblem::TooLong { len: 4096 }),
        (&long_path, CgroupDirProblem::TooLong { len: 1199 }),
    ];
    for (name, want) in cases {
        let err = cg.grant(name, VFIO).unwrap_err();
        match &err {
            Error::CgroupDirRejected { problem, .. } => assert_eq!(problem, &want, "{name:?}"),
            other => panic!("{name:?}: expected a rejection, got {other}"),
        }
        assert!(
            err.to_string().len() < 400,
            "bounded message for {name:?}: {err}"
        );
        assert!(!err.to_string().contains('\0'), "NUL escaped in message");
    }
    let component = format!("kubepods/{}", "b".repeat(256));
    match cg.grant(&component, VFIO).unwrap_err() {
        Error::CgroupDirRejected { problem, .. } => {
            assert_eq!(problem, CgroupDirProblem::ComponentTooLong { len: 256 })
        }
        other => panic!("expected a rejection, got {other}"),
    }
    assert!(writer.writes().is_empty());
}

#[test]
fn symlinks_are_never_followed_inside_or_out() {
    let (tree, writer, cg) = v1_tree();
    let outside = tree.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("devices.allow"), "").unwrap();
    let root = tree.cgroup_root();
    std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
    std::os::unix::fs::symlink("../../outside", root.join("kubepods/evil2")).unwrap();
    std::os::unix::fs::symlink(".", root.join("self")).unwrap();
    std::os::unix::fs::symlink("ctr1", root.join("kubepods/besteffort/pod1/alias")).unwrap();
    std::os::unix::fs::symlink("besteffort", root.join("kubepods/qos")).unwrap();
    for name in [
        "evil",
        "kubepods/evil2",
        "self",
        "kubepods/besteffort/pod1/alias",
        "kubepods/qos/pod1/ctr1",
    ] {
        let err = cg.grant(name, VFIO).unwrap_err();
        assert!(
            matches!(err, Error::CgroupDirRefused { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains("symlink"), "{name}: {err}");
    }
    assert!(writer.writes().is_empty());
}

#[test]
fn only_a_container_cgroup_below_a_pod_is_granted_to() {
    let (tree, writer, cg) = v1_tree();
    tree.cgroup("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podab12.slice/cri-containerd-1.scope");
    tree.cgroup("kubepods/burstable/pod2/ctr2/nested");
    for name in [
        "kubepods",
        "kubepods/besteffort",
        "kubepods/besteffort/pod1",
        "kubepods.slice",
        "kubepods.slice/kubepods-burstable.slice",
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podab12.slice",
        "kubepods/burstable/pod2/ctr2",
        "kubepods/burstable/pod2/ctr2/nested",
    ] {
        let err = cg.grant(name, VFIO).unwrap_err();
        assert!(
            matches!(err, Error::CgroupDirRefused { .. }),
            "{name}: {err}"
        );
    }
    assert!(writer.writes().is_empty(), "{:?}", writer.writes());
    cg.grant(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podab12.slice/cri-containerd-1.scope",
        VFIO,
    )
    .unwrap();
    assert_eq!(writer.writes().len(), 1);
}

#[test]
fn a_trailing_glob_expands_to_every_container_of_the_pod() {
    let (tree, writer, cg) = v1_tree();
    tree.cgroup("kubepods/besteffort/pod1/ctr2");
    let grant = cg.grant_all("kubepods/besteffort/pod1/*", &[VFIO]).unwrap();
    assert_eq!(grant.rules().len(), 2);
    for c in ["ctr1", "ctr2"] {
        assert!(writer.is_allowed(
            &tree.cgroup_root().join("kubepods/besteffort/pod1").join(c),
            VFIO
        ));
    }
    cg.revoke_grant(&grant).unwrap();
    for c in ["ctr1", "ctr2"] {
        assert!(!writer.is_allowed(
            &tree.cgroup_root().join("kubepods/besteffort/pod1").join(c),
            VFIO
        ));
    }
    for (name, why) in [
        ("kubepods/besteffort/pod9/*", "cannot be resolved"),
        ("kubepods/besteffort/*", "names a pod"),
        ("kubepods/*/pod1/ctr1", "trailing"),
    ] {
        let err = cg.grant_all(name, &[VFIO]).unwrap_err().to_string();
        assert!(err.contains(why), "{name}: {err}");
    }
    std::fs::create_dir_all(tree.cgroup_root().join("kubepods/besteffort/pod3")).unwrap();
    let err = cg
        .grant_all("kubepods/besteffort/pod3/*", &[VFIO])
        .unwrap_err()
        .to_string();
    assert!(err.contains("matches no cgroup"), "{err}");
}

#[test]
fn a_device_a_wider_rule_already_allows_is_neither_granted_nor_revoked() {
    let (tree, writer, cg) = v1_tree();
    let dir = tree.cgroup_root().join(POD);
    std::fs::write(dir.join("devices.list"), "a *:* rwm\n").unwrap();
    let grant = cg.grant_all(POD, &[VFIO, GROUP]).unwrap();
    assert!(grant.rules().is_empty());
    cg.revoke_grant(&grant).unwrap();
    assert!(writer.writes().is_empty(), "{:?}", writer.writes());
    std::fs::write(dir.join("devices.list"), "c 10:* rw\nc 1:3 rwm\n").unwrap();
    let grant = cg.grant_all(POD, &[VFIO, GROUP]).unwrap();
    assert_eq!(grant.rules().len(), 1, "only the group device was missing");
    assert_eq!(
        writer.writes(),
        vec![("devices.allow".to_string(), "c 243:3 rw".to_string())]
    );
}

#[test]
fn nonexistent_cgroup_is_refused_with_its_path() {
    let (_tree, _writer, cg) = v1_tree();
    let err = cg.grant("kubepods/besteffort/pod9/ctr9", VFIO).unwrap_err();
    assert!(matches!(err, Error::CgroupDirUnresolvable { .. }), "{err}");
    assert!(err.to_string().contains("pod9/ctr9"), "{err}");
}

#[test]
fn a_file_is_not_a_cgroup() {
    let (tree, _writer, cg) = v1_tree();
    std::fs::write(tree.cgroup_root().join("kubepods/file"), "").unwrap();
    let err = cg.grant("kubepods/file", VFIO).unwrap_err();
    assert!(matches!(err, Error::CgroupDirUnresolvable { .. }), "{err}");
}

#[test]
fn directory_without_devices_allow_is_not_a_devices_cgroup() {
    let (tree, _writer, cg) = v1_tree();
    std::fs::create_dir_all(tree.cgroup_root().join("kubepods/pod5/plain")).unwrap();
    let err = cg.grant("kubepods/pod5/plain", VFIO).unwrap_err();
    assert!(matches!(err, Error::NotDevicesCgroup { .. }), "{err}");
}

#[test]
fn devices_allow_as_a_symlink_is_refused() {
    let (tree, _writer, cg) = v1_tree();
    let dir = tree.cgroup_root().join("kubepods/pod5/linked");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(tree.path().join("elsewhere"), "").unwrap();
    std::os::unix::fs::symlink(tree.path().join("elsewhere"), dir.join("devices.allow")).unwrap();
    let err = cg.grant("kubepods/pod5/linked", VFIO).unwrap_err();
    assert!(matches!(err, Error::NotDevicesCgroup { .. }), "{err}");
}

#[test]
fn cgroup_v2_root_fails_grants_naming_the_allocate_alternative() {
    let tree = Tree::new();
    std::fs::write(
        tree.cgroup_root().join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    tree.cgroup(POD);
    assert_eq!(
        detect_version(&tree.cgroup_root()).unwrap(),
        CgroupVersion::V2
    );
    let writer = KernelLikeWriter::new();
    let cg = CgroupDevices::with_writer(tree.cgroup_root(), writer.clone()).unwrap();
    assert_eq!(cg.version(), CgroupVersion::V2);
    let err = cg.grant(POD, VFIO).unwrap_err();
    assert!(matches!(err, Error::CgroupV2 { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("cgroup v2") && msg.contains("Allocate"),
        "{msg}"
    );
    assert!(writer.writes().is_empty(), "nothing written on v2");
}

#[test]
fn missing_devices_root_on_a_v2_host_is_detected_as_v2() {
    let tree = Tree::new();
    std::fs::write(tree.cgroup_root().join("cgroup.controllers"), "cpu\n").unwrap();
    let devices = tree.cgroup_root().join("devices");
    assert_eq!(detect_version(&devices).unwrap(), CgroupVersion::V2);
    let cg = CgroupDevices::open(&devices).unwrap();
    assert!(matches!(cg.grant(POD, VFIO), Err(Error::CgroupV2 { .. })));
}

#[test]
fn missing_root_on_a_v1_host_is_an_error_naming_it() {
    let tree = Tree::new();
    let err = CgroupDevices::open(tree.path().join("nope/devices")).unwrap_err();
    assert!(matches!(err, Error::CgroupRoot { .. }), "{err}");
    assert!(err.to_string().contains("nope/devices"), "{err}");
}

#[test]
fn host_cgroup2_mount_is_detected_by_filesystem_magic() {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let is_cgroup2 = nix::sys::statfs::statfs(root)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    if !is_cgroup2 {
        eprintln!(
            "SKIP host_cgroup2_mount_is_detected_by_filesystem_magic: /sys/fs/cgroup is not cgroup2 here"
        );
        return;
    }
    // Read-only look at the host: detection only stats, it writes nothing.
    assert_eq!(detect_version(root).unwrap(), CgroupVersion::V2);
}

#[test]
fn file_rule_writer_writes_one_rule_per_file_on_a_fake_tree() {
    let tree = Tree::new();
    let dir = tree.cgroup(POD);
    let cg = CgroupDevices::with_writer(tree.cgroup_root(), std::sync::Arc::new(FileRuleWriter))
        .unwrap();
    cg.grant(POD, VFIO).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("devices.allow")).unwrap(),
        "c 10:196 rw"
    );
    cg.revoke(POD, VFIO).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("devices.deny")).unwrap(),
        "c 10:196 rw"
    );
}

#[test]
fn concurrent_grants_and_revokes_balance_out() {
    let (tree, writer, cg) = v1_tree();
    let cg = std::sync::Arc::new(cg);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let cg = cg.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    cg.grant(POD, VFIO).unwrap();
                    cg.revoke(POD, VFIO).unwrap();
                }
            })
        })
        .collect();
    cg.grant(POD, GROUP).unwrap();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(cg.holders(POD, VFIO), 0);
    assert!(!writer.is_allowed(&tree.cgroup_root().join(POD), VFIO));
    assert!(writer.is_allowed(&tree.cgroup_root().join(POD), GROUP));
}

/// A grant of a process killed before it could revoke: the next process reads it back from its
/// state and denies exactly those rules, though it never counted them itself.
#[test]
fn a_recorded_grant_is_revoked_by_a_later_process() {
    let (tree, writer, cg) = v1_tree();
    let grant = cg.grant_all(POD, &[VFIO, GROUP]).unwrap();
    let saved = serde_json::to_string(&grant).unwrap();
    drop(cg);

    let later = CgroupDevices::with_writer(tree.cgroup_root(), writer.clone()).unwrap();
    let read_back: sriov_vfio::Grant = serde_json::from_str(&saved).unwrap();
    assert_eq!(read_back, grant);
    later.revoke_recorded(&read_back).unwrap();
    let dir = tree.cgroup_root().join(POD);
    assert!(!writer.is_allowed(&dir, VFIO));
    assert!(!writer.is_allowed(&dir, GROUP));
    let denies = writer
        .writes()
        .into_iter()
        .filter(|(f, _)| f == "devices.deny")
        .count();
    assert_eq!(denies, 2);

    // The pod is gone with its cgroup: nothing to do, no error.
    std::fs::remove_dir_all(&dir).unwrap();
    later.revoke_recorded(&read_back).unwrap();
}
