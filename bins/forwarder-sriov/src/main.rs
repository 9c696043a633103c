//! `forwarder-sriov`: the NSM SR-IOV forwarder binary (composition only).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
