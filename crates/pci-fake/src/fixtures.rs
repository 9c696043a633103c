//! Named fixtures shaped like real NICs, and a generator for big trees.
//!
//! The shipped copies under `testdata/sysfs/<name>` are written from these
//! by the `write-fixtures` binary; a test keeps the two identical.

use crate::builder::{FunctionSpec, SriovSpec, TreeBuilder};

/// Names of the shipped fixtures, as directories under `testdata/sysfs/`.
pub const SHIPPED: &[&str] = &["x710-2port", "node"];

/// The builder of a shipped fixture by name.
pub fn by_name(name: &str) -> Option<TreeBuilder> {
    match name {
        "x710-2port" => Some(x710_2port(TreeBuilder::new())),
        "node" => Some(node()),
        _ => None,
    }
}

/// Intel X710 (i40e PF 8086:1572, iavf VF 8086:154c), two ports at
/// 0000:3b:00.0/1 on NUMA node 0, 64 VFs possible and 4 enabled per port.
/// VF offsets and stride are the X710's: port 0's VFs start at 3b:02.0,
/// port 1's at 3b:0a.0.
pub fn x710_2port(b: TreeBuilder) -> TreeBuilder {
    let port = |addr: &str, ifname: &str, offset: u16| {
        FunctionSpec::ethernet(addr, 0x8086, 0x1572)
            .driver("i40e")
            .ifname(ifname)
            .numa(0)
            .sriov(SriovSpec {
                total_vfs: 64,
                num_vfs: 4,
                offset,
                stride: 1,
                vf_device: 0x154c,
            })
    };
    b.driver("i40e", &["8086:1572"], true)
        .driver("iavf", &["8086:154c"], true)
        .function(port("0000:3b:00.0", "ens785f0", 16))
        .function(port("0000:3b:00.1", "ens785f1", 79))
}

/// Mellanox ConnectX-5 (mlx5_core for PF 15b3:1017 and VF 15b3:1018), one
/// port at 0000:5e:00.0 on NUMA node 1, 8 VFs possible, 2 enabled.
pub fn connectx5(b: TreeBuilder) -> TreeBuilder {
    b.driver("mlx5_core", &["15b3:1017", "15b3:1018"], true)
        .function(
            FunctionSpec::ethernet("0000:5e:00.0", 0x15b3, 0x1017)
                .driver("mlx5_core")
                .ifname("ens1f0np0")
                .numa(1)
                .sriov(SriovSpec {
                    total_vfs: 8,
                    num_vfs: 2,
                    offset: 2,
                    stride: 1,
                    vf_device: 0x1018,
                }),
        )
}

/// Intel 82576 as QEMU's `igb` device shows it under Linux 6.12: PF at
/// 0000:01:00.0, VF offset 128 and stride 2 (VFs at 01:10.0, 01:10.2, ...),
/// `sriov_totalvfs` 7, PF in IOMMU group 3, no VFs enabled.
pub fn igb_82576(b: TreeBuilder) -> TreeBuilder {
    b.driver("igb", &["8086:10c9"], true)
        .driver("igbvf", &["8086:10ca"], true)
        .function(
            FunctionSpec::ethernet("0000:01:00.0", 0x8086, 0x10c9)
                .driver("igb")
                .ifname("enp1s0")
                .iommu_group(3)
                .sriov(SriovSpec {
                    total_vfs: 7,
                    num_vfs: 0,
                    offset: 128,
                    stride: 2,
                    vf_device: 0x10ca,
                }),
        )
}

/// An on-board NIC without SR-IOV (e1000e) and a device no driver claims.
pub fn plain_devices(b: TreeBuilder) -> TreeBuilder {
    b.driver("e1000e", &["8086:15bb"], true)
        .function(
            FunctionSpec::ethernet("0000:00:1f.6", 0x8086, 0x15bb)
                .driver("e1000e")
                .ifname("eno1"),
        )
        .function(FunctionSpec::ethernet("0000:00:14.3", 0x8086, 0xa370).class(0x028000))
}

/// A node with everything: X710, ConnectX-5, 82576, a plain NIC, an unbound device.
pub fn node() -> TreeBuilder {
    plain_devices(igb_82576(connectx5(x710_2port(TreeBuilder::new()))))
}

/// `pfs` Intel E810-like PFs (ice 8086:1592, iavf VF 8086:1889) with `vfs`
/// VFs each, all enabled; PF `i` sits on bus `0x10 + 2*i` and its VFs follow
/// it (stride 1, offset 8), spilling onto the next bus past 248.
pub fn generated(pfs: u32, vfs: u32) -> TreeBuilder {
    let mut b = TreeBuilder::new()
        .driver("ice", &["8086:1592"], true)
        .driver("iavf", &["8086:1889"], true);
    for i in 0..pfs {
        let bus = 0x10 + 2 * i;
        let addr = format!("0000:{bus:02x}:00.0");
        b = b.function(
            FunctionSpec::ethernet(&addr, 0x8086, 0x1592)
                .driver("ice")
                .numa((i % 2) as i32)
                .sriov(SriovSpec {
                    total_vfs: vfs,
                    num_vfs: vfs,
                    offset: 8,
                    stride: 1,
                    vf_device: 0x1889,
                }),
        );
    }
    b
}
