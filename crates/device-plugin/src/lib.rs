//! Kubelet device plugin server and pod-resources client (work in progress).
