//! PCI functions through sysfs.
