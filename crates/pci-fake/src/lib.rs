//! Fake sysfs.
